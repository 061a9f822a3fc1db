"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""


def without_keys(obj, keys):
    """``obj`` (nested dicts and lists) with every dict entry whose key is in ``keys`` removed."""
    if isinstance(obj, dict):
        return {k: without_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without_keys(v, keys) for v in obj]
    return obj
