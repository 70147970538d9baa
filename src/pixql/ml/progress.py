"""Progress bars as pixql shows them (tqdm's: a notebook widget in Jupyter, text elsewhere), in a
module of their own so that a run without torch can show one."""


def progress_bar(total, desc, enabled, unit="img", leave=False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True)
