"""Task detection, label maps built from train, and label parsing with actionable errors."""
from __future__ import annotations

import difflib
import json
import math
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .readers import Row, _is_float, _short, read_text


@dataclass
class LabelMap:
    task: str
    names: list[str]          # class names (single/multi-label); ["score"] for regression
    from_ids: bool = False    # single-label data gives ids (0..C-1) rather than names
    note: str = ""            # how integer labels were read, when that is a guess the run should print

    @property
    def num_labels(self) -> int:
        return 1 if self.task == "regression" else len(self.names)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "names": self.names, "from_ids": self.from_ids}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelMap":
        return cls(d["task"], list(d["names"]), bool(d.get("from_ids", False)))


def _is_int(s: Any) -> bool:
    return isinstance(s, str) and s.lstrip("-").isdigit()


def canon(label: Any) -> Any:
    """A single-label value as a class name: '1.0' (a whole number written as a float, as pandas writes an integer
    column with gaps) is '1', so a train file of 0.0/1.0 and a dev file of 0/1 name the same classes."""
    if isinstance(label, str) and "." in label and _is_float(label) and not _is_int(label):
        v = float(label)
        if v.is_integer() and abs(v) < 2**53:
            return str(int(v))
    return label


def relabel(rows: list[Row], mapping: dict[Any, Any], sep: str, used: Counter[str], multi: bool = False
            ) -> list[Row]:
    """data.label_map, in place (the list keeps its type and `columns`): a row whose label (as a class name: canon)
    is a key gets the key's value; with `multi` (a multi-label task) a row's labels (`a|b`, a JSON list) are mapped
    each (merged ones once), while a single-label class named `a|b` stays one name. `used` counts the keys applied."""
    if not mapping:
        return rows
    m = {_key(k): str(v).strip() for k, v in mapping.items()}
    for r in rows:
        lab = r.label
        key = None if lab is None else _key(lab)
        if key is not None and key in m:
            r.label = m[key]
            used[key] += 1
        elif multi and (isinstance(lab, list) or (isinstance(lab, str) and (sep in lab or lab.lstrip().startswith("[")))):
            parts = [_key(p) for p in split_multi(lab.strip() if isinstance(lab, str) else lab, sep) or []]
            if any(p in m for p in parts):
                used.update(p for p in parts if p in m)
                r.label = sep.join(dict.fromkeys(m.get(p, p) for p in parts))
    return rows


def mapped_names(names: list[str], mapping: dict[Any, Any]) -> list[str]:
    """Class names under data.label_map (renamed, merged ones once, in order): the classes of 0/1 label columns."""
    m = {_key(k): str(v).strip() for k, v in mapping.items()}
    return list(dict.fromkeys(m.get(_key(n), n) for n in names))


def _key(label: Any) -> str:
    """A label as data.label_map's keys are matched: a class name (canon: 1.0 is 1), stripped; JSON true is 'true'."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(canon(label.strip() if isinstance(label, str) else str(label)))


def _unknown_label_fix(lab: str, names: list[str], label_map: dict[Any, Any]) -> str:
    """The fix for a label train lacks: the closest train label, and the data.label_map (the one in use, plus this
    entry) that maps it; numbers get no guess (104 is not a typo of 103)."""
    close = [] if _is_float(lab) else difflib.get_close_matches(lab, names, n=1, cutoff=0.5)
    if not close:
        return "fix: correct the label or add examples of it to train"
    merged = {str(k): str(v) for k, v in label_map.items()} | {lab: close[0]}
    return f"did you mean {close[0]!r}? fix: correct the label, or map it: {label_map_flag(merged.items())}"


def label_map_flag(pairs: Any) -> str:
    """`--set 'data.label_map={"from": "to", ...}'`, quoted for a shell, for (from, to) pairs."""
    spec = "data.label_map={" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
                                          for k, v in pairs) + "}"
    return f"--set {shlex.quote(spec)}"


def relabel_note(mapping: dict[Any, Any], used: Counter[str]) -> str:
    """What data.label_map did: rows per key, and keys no label matched (a typo in the map, or in the data)."""
    keys = [_key(k) for k in mapping]
    done = ", ".join(f"{k!r} ({used[k]}) -> {str(v).strip()!r}" for k, v in zip(keys, mapping.values()) if used[k])
    unused = [k for k in keys if not used[k]]
    return ("labels: data.label_map " + (f"renamed {done}" if done else "renamed nothing")
            + (f"; no label {', '.join(map(repr, unused))} in the data (a typo in the map?)" if unused else ""))


def split_multi(raw: Any, sep: str) -> list[str] | None:
    """`a|b` or a JSON list -> ["a", "b"]; None when unparseable."""
    if isinstance(raw, list):
        return [str(x).strip() for x in raw]
    if isinstance(raw, str) and raw.startswith("["):
        try:
            v = json.loads(raw)
            return [str(x).strip() for x in v] if isinstance(v, list) else None
        except json.JSONDecodeError:
            return None
    return [p.strip() for p in str(raw).split(sep) if p.strip()]


def detect_task(rows: list[Row], sep: str) -> str:
    raws = [r.label for r in rows]
    if any(isinstance(x, list) or (isinstance(x, str) and (x.startswith("[") or (sep and sep in x))) for x in raws):
        return "multi_label"
    if all(_is_float(x) for x in raws) and any(not _is_int(x) for x in raws):
        values = {float(x) for x in raws}
        if len(values) <= 2 and all(v.is_integer() for v in values):
            return "single_label"       # 0.0/1.0: a binary label that a DataFrame wrote as floats
        return "regression"
    return "single_label"


def task_hint(task: str, rows: list[Row], sep: str = "|") -> str:
    """What to set when the detected task may be another reading of the labels ("" when it is clear): numbers
    (classes or scores), or single labels that are lists joined by another separator than data.label_sep."""
    raws = [r.label for r in rows]
    if task == "single_label" and raws:
        listed = _joined_lists(raws, sep)
        if listed:
            return listed
    if task == "multi_label" or not raws or not all(_is_float(x) for x in raws):
        return ""
    values = sorted({float(x) for x in raws})
    whole = all(v.is_integer() for v in values)
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    if task == "single_label" and (len(values) > 10 or not all(_is_int(x) for x in raws)):
        return (f"; the labels are {len(values)} numbers ({shown}) read as classes: if they are scores, "
                f"--set task=regression")
    if task == "regression" and whole and len(values) <= 10:
        return (f"; the targets are {len(values)} whole numbers ({shown}) read as scores: if they are classes, "
                f"--set task=single_label")
    return ""


def _joined_lists(raws: list[Any], sep: str) -> str:
    """Labels like 'horror,action' read as single labels: when a tenth of them hold ',' or ';' and their pieces
    are fewer than the distinct labels (the pieces recombine), they are likely multi-label lists."""
    labels = [x for x in raws if isinstance(x, str)]
    for s in (",", ";"):
        if s == sep or not labels:
            continue
        joined = [x for x in labels if s in x.strip()]
        pieces = {p.strip() for x in labels for p in x.split(s) if p.strip()}
        if all(_is_float(p) for p in pieces):
            continue                    # 4,5 / 3,0: numbers with a decimal comma, not lists
        if len(joined) >= 0.1 * len(labels) and len(pieces) < len(set(labels)):
            return (f"; {len(joined)} of {len(labels)} labels hold {s!r} and their {len(pieces)} pieces recombine "
                    f"into {len(set(labels))} distinct labels: if they are lists of labels (multi-label), "
                    f"--set {shlex.quote(f'data.label_sep={s}')} (the separator is {sep!r})")
    return ""


def read_class_file(path: Path, encoding: str = "utf-8") -> list[str]:
    names = [ln.strip() for ln in read_text(path, encoding).split("\n") if ln.strip()]
    if not names:
        raise DataError(f"{path}: the class file is empty: write one class name per line")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: class names repeated: {', '.join(dup)}; fix: one line per distinct class")
    return names


def build_label_map(task: str, rows: list[Row], class_names: list[str] | None, label_type: str, sep: str,
                    class_file: str = "") -> LabelMap:
    if task == "regression":
        return LabelMap(task, ["score"])
    if task == "multi_label":
        if class_names is None:
            seen = sorted({lab for r in rows for lab in (split_multi(r.label, sep) or [])})
            class_names = seen
        return LabelMap(task, list(class_names))
    raws = [canon(r.label) for r in rows]
    as_ids = label_type == "id" or (label_type == "auto" and all(_is_int(x) for x in raws)
                                    and not (class_names and all(x in class_names for x in raws)))
    if as_ids and label_type == "auto" and class_names is None:
        as_ids, note = _ids_or_names(raws)
        if not as_ids:
            return LabelMap(task, sorted(set(raws), key=int), note=note)
    if not as_ids:
        names = list(class_names) if class_names else sorted(set(raws))
        notes = [n for n in (_case_twins(names), "" if class_names else _rare_twins(raws)) if n]
        return LabelMap(task, names, note="; ".join(notes))
    ids = [int(x) for x in raws if _is_int(x)]
    if not ids:  # label_type=id but nothing is an id: encode_labels names each bad line
        return LabelMap(task, list(class_names) if class_names else ["0"], from_ids=True)
    if class_names is None:
        lo, hi = min(ids), max(ids)
        if lo >= 1 and 0 not in ids:
            r = next(r for r in rows if _is_int(canon(r.label)) and int(canon(r.label)) == hi)
            raise DataError(f"{r.where}: label ids run {lo}..{hi} with no 0: they look 1-based; "
                            f"fix: subtract 1 from every id, or read them as names with --set data.label_type=name")
        return LabelMap(task, [str(i) for i in range(hi + 1)], from_ids=True)
    C = len(class_names)
    if ids and max(ids) == C and min(ids) >= 1 and 0 not in ids:
        r = next(r for r in rows if _is_int(canon(r.label)) and int(canon(r.label)) == C)
        raise DataError(f"{r.where}: label id {C} is out of range: {class_file} names {C} classes "
                        f"(0..{C - 1}); the ids look 1-based: fix: subtract 1 from every id")
    return LabelMap(task, list(class_names), from_ids=True)


def _case_twins(names: list[str]) -> str:
    """A note when class names differ only in case or inner spaces ('positive' / 'Positive'): likely one class
    typed two ways, which train keeps apart."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault("".join(str(n).lower().split()), []).append(n)
    twins = [g for g in groups.values() if len(g) > 1]
    if not twins:
        return ""
    shown = "; ".join(" / ".join(repr(n) for n in g) for g in twins[:4])
    return (f"labels: {shown}: class names that differ only in case or spaces are different classes; if each is one "
            f"class, write it one way in every file")


def _rare_twins(raws: list[str]) -> str:
    """A note when a rare class (at most 2 rows, and 20x rarer than another) is named almost like a frequent one:
    one name inside the other ('正' / '正面') or as many characters with half or more of them the same ('負面' /
    '负面'): likely a typo, which train keeps as a class of its own."""

    counts = Counter(raws)
    common = sorted((n for n in counts if counts[n] >= 20), key=lambda n: -counts[n])
    found, pairs = [], []
    for rare in sorted(n for n in counts if counts[n] <= 2):
        close = []
        for big in common:
            ratio = difflib.SequenceMatcher(None, rare, big).ratio()
            if (rare in big or big in rare or len(rare) == len(big) and ratio >= 0.5) and counts[big] >= 20 * counts[rare]:
                close.append((ratio, counts[big], big))
        if close:                                   # the most alike (several when they tie)
            best = max(r for r, _, _ in close)
            tied = [(n, b) for r, n, b in sorted(close, reverse=True) if r == best]
            found.append(f"{rare!r} ({counts[rare]}) / " + " or ".join(f"{b!r} ({n})" for n, b in tied))
            pairs.append((rare, tied[0][1]))
    if not found:
        return ""
    return (f"labels: {'; '.join(found[:4])}: a rare label named almost like a frequent one may be a typo, and "
            f"trains as a class of its own; if so, correct those rows or map them: {label_map_flag(pairs[:4])}")


def _ids_or_names(raws: list[str]) -> tuple[bool, str]:
    """Integer labels without a class file: class ids when they are exactly 0..max (every id used, as a label
    encoder writes them); otherwise (-1/1, 1..5 stars, 0/5/10, ...) names, so no class is invented empty."""
    ids = sorted({int(x) for x in raws})
    if ids == list(range(len(ids))):
        return True, ""
    shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
    note = (f"labels: the integers {shown} are read as {len(ids)} class names (class ids would be exactly "
            f"0..{len(ids) - 1}); predictions name them the same way")
    if ids[0] == 0:   # 0-based with gaps: ids of classes train lacks are possible; -1/1 or 1..5 are never ids
        note += (f"; if they are class ids 0..{ids[-1]} and train lacks some classes: --set data.label_type=id "
                 f"(better: a class file naming every class)")
    return False, note


def encode_labels(rows: list[Row], lm: LabelMap, sep: str, class_file: str = "", model: bool = False,
                  label_map: dict[Any, Any] | None = None) -> list[Any]:
    """Raw labels -> int (single), list[int] (multi), float (regression); every bad value reported. `model`: the
    label map is a trained model's (evaluate), so a fix is to write the labels as its training data did."""
    out: list[Any] = []
    problems: list[str] = []
    fixes: dict[Any, str] = {}          # per distinct unknown label
    index = {n: i for i, n in enumerate(lm.names)}
    C = len(lm.names)
    for r in rows:
        where = r.where
        if lm.task == "regression":
            if not _is_float(r.label):
                problems.append(f"{where}: regression target {_short(str(r.label))} is not a number; fix: write a number like 3.5")
            elif not math.isfinite(float(r.label)):
                problems.append(f"{where}: regression target is {r.label}: NaN/inf cannot be learned; fix: give a finite number or drop the line")
            else:
                out.append(float(r.label))
                continue
        elif lm.task == "multi_label":
            labs = split_multi(r.label, sep)
            if labs is None:
                problems.append(f"{where}: cannot read labels {_short(str(r.label))}; fix: write `a{sep}b` or a JSON list")
                continue
            bad = [lab for lab in labs if lab not in index]
            if bad:
                problems.append(f"{where}: label {bad[0]!r} is unknown (known: {', '.join(lm.names[:12])}"
                                f"{', ...' if C > 12 else ''}); fix: correct it, or add it to the class file / train data")
                continue
            out.append(sorted({index[lab] for lab in labs}))
            continue
        elif lm.from_ids:
            r_label = canon(r.label)
            if not _is_int(r_label) and model:
                shown = ("" if lm.names == [str(i) for i in range(C)]
                         else f": {', '.join(lm.names[:12])}{', ...' if C > 12 else ''}")
                problems.append(f"{where}: label {_short(str(r.label))} is not a class id of this model (ids 0..{C - 1}"
                                f"{shown}); fix: write the labels as its training data did, as ids 0..{C - 1}")
            elif not _is_int(r_label):
                problems.append(f"{where}: label {_short(str(r.label))} is not a class id (expected 0..{C - 1}); fix: use ids, "
                                f"or --set data.label_type=name to read labels as names")
            elif not 0 <= int(r_label) < C:
                src = f"{class_file} names {C} classes" if class_file else f"train has ids 0..{C - 1}"
                problems.append(f"{where}: label id {r.label} is out of range: {src} (0..{C - 1}); "
                                f"fix: correct the id" + (" or add the class to the class file" if class_file else ""))
            else:
                out.append(int(r_label))
                continue
        else:
            lab = canon(r.label)
            if lab not in index:
                ids_hint = (" (train's integers are read as class names; if they are class ids, "
                            "--set data.label_type=id)") if lm.note.startswith("labels: the integers") else ""
                if lab not in fixes:
                    fixes[lab] = _unknown_label_fix(str(lab), lm.names, label_map or {})
                problems.append(f"{where}: label {_short(str(r.label))} does not occur in train (train labels: "
                                f"{', '.join(lm.names[:12])}{', ...' if C > 12 else ''}){ids_hint}; {fixes[lab]}")
            else:
                out.append(index[lab])
                continue
    if problems:
        raise DataError(_scheme_summary(rows, lm, index) + problems)
    return out


def _scheme_summary(rows: list[Row], lm: LabelMap, index: dict[str, int]) -> list[str]:
    """One line before the per-row problems when (nearly) every single-label value is unknown to the label map: the
    file's labels and train's side by side, as it is likely another labelling scheme, not typos."""
    if lm.task != "single_label" or len(rows) < 10:
        return []
    unknown = Counter(lab for lab in (canon(r.label) for r in rows) if lab not in index)
    if unknown.total() < 0.9 * len(rows):
        return []
    theirs = sorted(unknown, key=lambda x: (-unknown[x], x))
    return [f"{rows[0].source}: {unknown.total()} of {len(rows)} labels are not among train's: its labels "
            f"({', '.join(map(repr, theirs[:6]))}{', ...' if len(theirs) > 6 else ''}) against train's "
            f"({', '.join(map(repr, lm.names[:6]))}{', ...' if len(lm.names) > 6 else ''}): another labelling "
            f"scheme? fix: write this file's labels as train's (e.g. map each of its labels to one of train's)"]
