"""Read template.yaml (CloudFormation tags included) and resolve the values the local stack needs."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


_parsed: dict[Path, tuple[int, dict[str, Any]]] = {}


def shared(path: Path = TEMPLATE) -> dict[str, Any]:
    """The parsed template itself, for readers that never change it (parsed again only when the file changes)."""
    mtime = path.stat().st_mtime_ns
    cached = _parsed.get(path)
    if cached is None or cached[0] != mtime:
        with open(path, encoding="utf-8") as handle:
            data: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
        cached = _parsed[path] = (mtime, data)
    return cached[1]


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as data, a fresh copy the caller may change."""
    return copy.deepcopy(shared(path))


@dataclass
class Resolver:
    """Resolves Ref, Fn::Sub, Fn::GetAtt and Fn::If against local physical values."""

    template: dict[str, Any]
    parameters: dict[str, str]
    pseudo: dict[str, str]
    refs: dict[str, str] = field(default_factory=dict)
    attrs: dict[tuple[str, str], str] = field(default_factory=dict)

    def param_defaults(self) -> dict[str, str]:
        return {k: str(v.get("Default", "")) for k, v in self.template.get("Parameters", {}).items()}

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"template Ref {name!r} has no local value yet")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m.group(1)) or self._sub(m.group(1))), text)
            if key == "Fn::GetAtt":
                return self.attrs[(arg[0], arg[1])]
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self.condition(condition) else when_false)
        return {k: self.resolve(v) for k, v in value.items()}

    def condition(self, name: str) -> bool:
        return self._truth(self.template.get("Conditions", {})[name])

    def _truth(self, expr: Any) -> bool:
        ((key, arg),) = expr.items()
        if key == "Fn::Not":
            return not self._truth(arg[0])
        if key == "Fn::Equals":
            return bool(self.resolve(arg[0]) == self.resolve(arg[1]))
        if key == "Condition":
            return self.condition(arg)
        raise ValueError(f"condition function {key} is not supported by the local stack")

    def _sub(self, name: str) -> str:
        if "." in name:
            logical, attr = name.split(".", 1)
            return self.attrs[(logical, attr)]
        return self.ref(name)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        """The template's resources of `kind` that CloudFormation would create (a false `Condition` leaves one out)."""
        return {
            k: v
            for k, v in self.template["Resources"].items()
            if v["Type"] == kind and ("Condition" not in v or self.condition(v["Condition"]))
        }

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals plus the function's own variables, resolved: what Lambda would set."""
        glob = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own = self.template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {k: str(self.resolve(v)) for k, v in {**glob, **own}.items()}
