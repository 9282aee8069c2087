"""The one rule every VM name obeys, whatever input it came from.

The name becomes file names (``<output dir>/<name>.qcow2``, which HyperSDK's completion check
looks for), a libvirt domain and a KubeVirt object base name, so anything that could climb out
of a directory or break a log line is refused rather than rewritten.
"""

from __future__ import annotations

import unicodedata


def vm_name_rule(name: str) -> str:
    """The rule ``name`` breaks, or "" when it may be used as a VM name."""
    if not name.strip():
        return "must not be empty"
    if "/" in name:
        return "must not contain '/'"
    if ".." in name:
        return "must not contain '..'"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "must not contain NUL or control characters"
    if any(unicodedata.category(ch) == "Cs" for ch in name):
        return "must not contain unpaired surrogates (not valid Unicode)"
    return ""
