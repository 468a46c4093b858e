"""A config.json written by an older cbd_tf, read by this one: the settings that moved or were
renamed since, mapped to where they are now. Standard library only (config.py reads it)."""

from __future__ import annotations

from typing import Any

# Settings that moved between sections: (old section, new section, name).
_MOVED = (("output", "data", "max_image_pixels"),)


def upgrade(values: dict[str, Any]) -> dict[str, Any]:
  """`values` (a config.json's dict) with every moved or renamed setting where it is now."""
  for old, new, name in _MOVED:
    if name in values.get(old, {}):
      old_section = dict(values[old])
      values[new] = {name: old_section.pop(name), **values.get(new, {})}
      values[old] = old_section
  # model.freeze_backbone became model.backbone_tuning.
  if "freeze_backbone" in values.get("model", {}):
    model = dict(values["model"])
    model.setdefault("backbone_tuning", "frozen" if model.pop("freeze_backbone") else "full")
    values["model"] = model
  return values
