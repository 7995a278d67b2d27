"""What a new export changes for a client of an old one: the comparison behind ``headkit diff``.

:func:`export_summary` reads what a client sees of an export (its signature
table with every input and output's dtype and shape, its feature spec, its
heads' classes and its default head); :func:`compare` is a pure function of
two summaries. A change *breaks* a client of the old export when a request
that worked may now fail or mean something else:

- a signature removed, or its method name changed;
- an input or output removed, or its dtype or shape changed; a new input
  (the old client does not send it);
- a new ``tf.Example`` feature without a default, or a feature's dtype,
  kind or shape changed;
- another default head (``serving_default`` serves another head);
- a class removed from a head's vocabulary, or the classes reordered (their
  ids change).

What is only added (a new head, signature or output; classes appended) does
not break; nor does a feature no longer read.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import attrs

from headkit.serving.inspection import describe_export
from headkit.serving.manifest import read_manifest

__all__ = ["Change", "ExportDiff", "BREAKING", "ADDED", "COMPATIBLE", "export_summary",
           "compare", "diff_exports"]

#: A change that can break a client of the old export.
BREAKING = "breaking"
#: Something only added: a client of the old export does not see it.
ADDED = "added"
#: Any other change a client of the old export does not notice.
COMPATIBLE = "compatible"


@attrs.frozen
class Change:
    """One difference between two exports.

    Example:
        >>> str(Change(BREAKING, "signature 'kind'", "removed"))
        "signature 'kind': removed"
    """

    kind: str  # BREAKING, ADDED or COMPATIBLE
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.detail}"

    def to_dict(self) -> Dict[str, str]:
        """``{"kind", "subject", "detail"}``, for ``headkit diff --json``."""
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


@attrs.frozen
class ExportDiff:
    """Every difference between an old and a new export, and whether any breaks a client.

    Example:
        >>> diff = ExportDiff("old", "new", [Change(ADDED, "head 'flag'", "added")])
        >>> diff.breaks, [str(c) for c in diff.added]
        (False, ["head 'flag': added"])
    """

    old: str
    new: str
    changes: Tuple[Change, ...] = attrs.field(converter=tuple)

    def _of(self, kind: str) -> Tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind == kind)

    @property
    def breaking(self) -> Tuple[Change, ...]:
        """The changes that can break a client of the old export."""
        return self._of(BREAKING)

    @property
    def added(self) -> Tuple[Change, ...]:
        """What the new export only adds."""
        return self._of(ADDED)

    @property
    def compatible(self) -> Tuple[Change, ...]:
        """Other changes a client of the old export does not notice."""
        return self._of(COMPATIBLE)

    @property
    def breaks(self) -> bool:
        """Whether anything breaks a client of the old export."""
        return bool(self.breaking)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: the paths, ``breaks``, and each change grouped by kind."""
        return {"old": self.old, "new": self.new, "breaks": self.breaks,
                "breaking": [c.to_dict() for c in self.breaking],
                "added": [c.to_dict() for c in self.added],
                "compatible": [c.to_dict() for c in self.compatible]}

    def format(self) -> str:
        """The text ``headkit diff`` prints: the changes by kind, then the verdict."""
        lines = [f"old: {self.old}", f"new: {self.new}"]
        for title, changes in (("breaks a client of the old export", self.breaking),
                               ("added", self.added), ("compatible", self.compatible)):
            if changes:
                lines.append(f"{title} ({len(changes)}):")
                lines += [f"  {change}" for change in changes]
        lines.append(f"{len(self.breaking)} breaking change(s): a client of the old export can "
                     "break." if self.breaks else "Nothing breaks a client of the old export.")
        return "\n".join(lines)


def _classes(output: Mapping[str, Any]) -> Optional[List[str]]:
    """A classifier's classes in id order: its vocabulary, or the ids as strings."""
    if output.get("vocabulary"):
        return [str(c) for c in output["vocabulary"]]
    if isinstance(output.get("n_classes"), int):
        return [str(i) for i in range(output["n_classes"])]
    return None


def export_summary(export_dir: str) -> Dict[str, Any]:
    """What a client sees of an export, JSON-ready, read from its files (nothing is run).

    Raises:
        FileNotFoundError: ``export_dir`` is not a headkit export.
        OSError: its ``saved_model.pb`` is missing or cannot be parsed.
        ValueError: its manifest is damaged.

    Example:
        >>> sorted(export_summary(export_dir))  # doctest: +SKIP
        ['default_head', 'feature_spec', 'heads', 'path', 'signatures']
    """
    description = describe_export(export_dir)
    manifest = read_manifest(export_dir)

    def tensors(entries: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
        return {t["name"]: {"dtype": t["dtype"], "shape": t["shape"]} for t in entries}

    heads = {}
    for head in manifest["heads"]["heads"]:
        output = head.get("output") or {}
        heads[head["name"]] = {"type": output.get("type"), "classes": _classes(output)}
    return {
        "path": export_dir,
        "default_head": manifest["default_head"],
        "heads": heads,
        "feature_spec": manifest["feature_spec"],
        "signatures": {s["key"]: {"method": s["method"], "inputs": tensors(s["inputs"]),
                                  "outputs": tensors(s["outputs"])}
                       for s in description["signatures"]},
    }


def _described(tensor: Mapping[str, Any]) -> str:
    shape = tensor.get("shape")
    return f"{tensor.get('dtype')} {'unknown shape' if shape is None else shape}"


def _tensor_changes(subject: str, role: str, old: Mapping[str, Any],
                    new: Mapping[str, Any]) -> List[Change]:
    changes = []
    for name in sorted(old):
        if name not in new:
            changes.append(Change(BREAKING, subject, f"{role} {name!r} removed"))
        elif old[name] != new[name]:
            changes.append(Change(BREAKING, subject, f"{role} {name!r}: {_described(old[name])} "
                                                     f"-> {_described(new[name])}"))
    for name in sorted(set(new) - set(old)):
        if role == "input":
            changes.append(Change(BREAKING, subject, f"new input {name!r}, which a client of the "
                                                     "old export does not send"))
        else:
            changes.append(Change(ADDED, subject, f"new output {name!r}"))
    return changes


def _signature_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Change]:
    changes = []
    for key in sorted(old):
        subject = f"signature {key!r}"
        if key not in new:
            changes.append(Change(BREAKING, subject, "removed"))
            continue
        before, after = old[key], new[key]
        if before["method"] != after["method"]:
            changes.append(Change(BREAKING, subject, f"method {before['method']!r} -> "
                                                     f"{after['method']!r}"))
        changes += _tensor_changes(subject, "input", before["inputs"], after["inputs"])
        changes += _tensor_changes(subject, "output", before["outputs"], after["outputs"])
    changes += [Change(ADDED, f"signature {key!r}", f"new ({new[key]['method']})")
                for key in sorted(set(new) - set(old))]
    return changes


def _feature_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Change]:
    changes = []
    for name in sorted(set(old) | set(new)):
        subject = f"tf.Example feature {name!r}"
        if name not in new:
            changes.append(Change(COMPATIBLE, subject, "no longer read (clients may keep "
                                                       "sending it)"))
        elif name not in old:
            required = new[name].get("kind") == "fixed" and "default_value" not in new[name]
            changes.append(Change(BREAKING, subject, "new and required: tf.Examples of a client "
                                                     "of the old export lack it")
                           if required else Change(ADDED, subject, "new, with a default"))
        else:
            for field in ("dtype", "kind", "shape", "default_value"):
                if old[name].get(field) != new[name].get(field):
                    changes.append(Change(BREAKING, subject, f"{field} {old[name].get(field)!r}"
                                                             f" -> {new[name].get(field)!r}"))
    return changes


def _class_changes(head: str, old: List[str], new: List[str]) -> List[Change]:
    subject = f"classes of head {head!r}"
    removed = [c for c in old if c not in new]
    changes = [Change(BREAKING, subject, f"class {c!r} removed") for c in removed]
    kept = [c for c in old if c in new]
    if [c for c in new if c in kept] != kept or any(new.index(c) != old.index(c) for c in kept):
        changes.append(Change(BREAKING, subject, f"reordered: the class ids change ({old!r} -> "
                                                 f"{new!r})"))
    added = [c for c in new if c not in old]
    if added:
        changes.append(Change(ADDED, subject, f"new class(es) {added!r}"))
    return changes


def _head_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Change]:
    changes = []
    for name in sorted(old):
        if name not in new:
            changes.append(Change(BREAKING, f"head {name!r}", "removed (its signatures with it)"))
            continue
        before, after = old[name], new[name]
        if before["type"] != after["type"]:
            changes.append(Change(BREAKING, f"head {name!r}", f"type {before['type']!r} -> "
                                                              f"{after['type']!r}"))
        elif before["classes"] is not None and after["classes"] is not None:
            changes += _class_changes(name, before["classes"], after["classes"])
    changes += [Change(ADDED, f"head {name!r}", f"new ({new[name]['type']})")
                for name in sorted(set(new) - set(old))]
    return changes


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> ExportDiff:
    """Every change from the ``old`` summary to the ``new`` one (:func:`export_summary`).

    Example:
        >>> table = {"y": {"method": "tensorflow/serving/regress", "inputs": {}, "outputs": {}}}
        >>> old = {"path": "a", "default_head": "y", "heads": {}, "feature_spec": {},
        ...        "signatures": table}
        >>> new = dict(old, path="b", signatures={})
        >>> [str(c) for c in compare(old, new).breaking]
        ["signature 'y': removed"]
    """
    changes = []
    if old["default_head"] != new["default_head"]:
        changes.append(Change(BREAKING, "default head",
                              f"{old['default_head']!r} -> {new['default_head']!r}: "
                              "serving_default serves another head"))
    changes += _head_changes(old["heads"], new["heads"])
    changes += _signature_changes(old["signatures"], new["signatures"])
    changes += _feature_changes(old["feature_spec"], new["feature_spec"])
    return ExportDiff(old.get("path", "old"), new.get("path", "new"), changes)


def diff_exports(old_export: str, new_export: str) -> ExportDiff:
    """Compare two headkit exports: what would break a client of ``old_export``.

    Either backend's exports, of any headkit version.

    Raises:
        FileNotFoundError, OSError, ValueError: a path is not a readable headkit export.

    Example:
        >>> diff = hk.diff_exports("exports/v1/1", "exports/v2/2")  # doctest: +SKIP
        >>> diff.breaks, [str(c) for c in diff.breaking]  # doctest: +SKIP
        (True, ["default head: 'species' -> 'sex': serving_default serves another head"])
    """
    return compare(export_summary(old_export), export_summary(new_export))
