"""How a run setting is declared: a dataclass field carrying its flag name and help.

cbd_tf/flags.py generates the absl flags from these fields. Standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, flag: str, help_text: str, choices: tuple[str, ...] = (),
            required: bool = False) -> Any:
  """A field the command line sets as --`flag`; cbd_tf/flags.py defines the flag from it.

  `choices`: the values the flag accepts (an enum flag). `required`: the flag has no default
  (absl's None) and validate() asks for it; the field's default stands for "not given".
  """
  return dataclasses.field(default=default, metadata={
      "flag": flag, "help": help_text, "choices": choices, "required": required})


def run_value(default: Any, help_text: str) -> Any:
  """A field the run fills in and config.json records; no flag sets it."""
  return dataclasses.field(default=default, metadata={"flag": None, "help": help_text})


def flag_fields(section: Any) -> list[dataclasses.Field]:
  """The fields of a config dataclass that a flag sets, in declaration order."""
  return [field for field in dataclasses.fields(section) if field.metadata.get("flag")]
