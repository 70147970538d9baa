"""The garbage collector while pixql loads torch and timm (pixql.collector)."""

import gc
import subprocess
import sys

from pixql import collector


def test_quiet_while_loading_only_until_torch_is_there(monkeypatch):
    owners = gc.get_threshold()
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a process that has not loaded it
    with collector.quiet_while_loading():
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *owners[1:])
    assert gc.get_threshold() == owners  # the owner's setting back
    with collector.quiet_while_loading():
        gc.set_threshold(5000, *owners[1:])  # the owner changed it during the statement: theirs stays
    assert gc.get_threshold() == (5000, *owners[1:])
    gc.set_threshold(*owners)
    gc.set_threshold(0, *owners[1:])  # the owner turned automatic collection off: it stays off
    try:
        with collector.quiet_while_loading():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*owners)
    monkeypatch.setitem(sys.modules, "torch", object())
    with collector.quiet_while_loading():
        assert gc.get_threshold() == owners  # torch loaded: nothing to quieten


def test_a_scripts_first_statement_loading_torch_runs_no_full_collection(tmp_path):
    """A script's (or notebook's) first BUILD imports torch and timm: with Python's default the
    collector ran 7 full collections over the new objects (~0.9 s); none now, and the script's
    own setting is back afterwards."""
    script = (
        "import gc, sys\n"
        "from PIL import Image\n"
        "full = []\n"
        "gc.callbacks.append(lambda phase, info: full.append(1) if phase == 'stop' and info['generation'] == 2 "
        "else None)\n"
        "import pixql\n"
        "folder = sys.argv[1]\n"
        "rows = []\n"
        "for i, (label, colour) in enumerate([('red', (220, 20, 20)), ('blue', (20, 20, 220))] * 2):\n"
        "    Image.new('RGB', (40, 40), colour).save(f'{folder}/{i}.png')\n"
        "    rows.append((f'{folder}/{i}.png', label))\n"
        "before = gc.get_threshold()\n"
        "db = pixql.connect(progress=False)\n"
        "db.sql('CREATE TABLE t (image VARCHAR, label VARCHAR)')\n"
        "db.sql('INSERT INTO t VALUES ' + ', '.join(repr(r) for r in rows))\n"
        "assert 'torch' not in sys.modules\n"
        "full.clear()\n"
        "db.sql(\"BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (image_col='image', label_col='label') "
        "AS SELECT * FROM t\")\n"
        "print('torch' in sys.modules, len(full), gc.get_threshold() == before)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "0", "True"]
