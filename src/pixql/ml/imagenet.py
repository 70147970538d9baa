"""The 1000 ImageNet class names, offline, from timm's bundled class info."""

import functools

# The one name ImageNet uses twice; the detailed descriptions tell the two apart.
_DISAMBIGUATE = {134: "crane (bird)", 517: "crane (machine)"}


def imagenet_class_names():
    return list(_names())


@functools.lru_cache(maxsize=1)
def _names():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    for i, name in _DISAMBIGUATE.items():
        if names[i] == "crane":
            names[i] = name
    return names
