"""Routing rules: which stages, models, destinations and priority a course gets.

Rules live in ``rules/*.yaml`` (files read in name order, rules in file order); the first rule
whose ``match`` fits a course wins. With no rules at all the embedded default applies (the
manifest stage only). Every problem is reported as ``file:line: rules[i].key: message`` at start,
so a typo stops the node before it routes a single course wrongly.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rtnode.config import did_you_mean, known_keys
from rtnode.section import Section
from rtnode.yamlsource import YamlError, load_yaml


class RuleMatch(Section):
    """Every condition given must hold; an empty match fits every course."""

    calling_ae: list[str] = Field(default_factory=list,
                                  description="glob patterns on the sender's AE title")
    called_ae: list[str] = Field(default_factory=list, description="glob patterns on our AE title")
    modalities: list[str] = Field(default_factory=list,
                                  description="all of these must be in the course")
    study_description: str | None = Field(None, description="regex, searched, case-insensitive")
    series_description: str | None = Field(None, description="regex on the planning CT's")
    has_rtdose: bool | None = None
    tag: Literal["clinical", "cohort"] | None = None

    @field_validator("study_description", "series_description")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class DoseRule(Section):
    """How a course's plans may be added up beyond what the data say (docs/DVH.md, "Dose plan")."""

    sum: list[Literal["boost"]] | None = Field(
        None, description="plan roles added to the primary on a hint alone, e.g. [boost] for a "
                          "plan labelled as a boost; null = the dvh config's dvh.sum")


class Rule(Section):
    name: str
    match: RuleMatch = Field(default_factory=RuleMatch)
    stages: list[str] = Field(
        default_factory=lambda: ["manifest", "segment", "rtstruct", "send", "dvh", "radiomics",
                                 "qc"])
    models: list[str] = Field(default_factory=lambda: ["builtin:body"])
    destinations: list[str] = Field(default_factory=list)
    priority: Literal["clinical", "cohort"] | None = None
    quiet_seconds: float | None = Field(None, ge=0)
    radiomics: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the config's radiomics: section")
    dose: DoseRule = Field(default_factory=DoseRule,
                           description="how plans are added up: {sum: [boost]}")

    @field_validator("radiomics")
    @classmethod
    def _radiomics(cls, v: dict[str, Any]) -> dict[str, Any]:
        from rtnode.radiomics.config import RadiomicsConfig

        RadiomicsConfig.model_validate(v)  # the same keys and types as the config section
        return v

    @model_validator(mode="after")
    def _no_repeats(self) -> "Rule":
        if len(set(self.stages)) != len(self.stages):
            raise ValueError("a stage is listed twice")
        return self


DEFAULT_RULE = Rule(name="default")


@dataclass(frozen=True)
class CourseFacts:
    """What rules can look at."""

    calling_ae: str = ""
    called_ae: str = ""
    modalities: frozenset[str] = frozenset()
    study_description: str = ""
    series_description: str = ""
    tag: str = "clinical"

    @property
    def has_rtdose(self) -> bool:
        return "RTDOSE" in self.modalities


def matches(m: RuleMatch, f: CourseFacts) -> bool:
    def glob(patterns: list[str], value: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)

    return (glob(m.calling_ae, f.calling_ae) and glob(m.called_ae, f.called_ae)
            and set(m.modalities) <= f.modalities
            and (m.study_description is None
                 or re.search(m.study_description, f.study_description, re.I) is not None)
            and (m.series_description is None
                 or re.search(m.series_description, f.series_description, re.I) is not None)
            and (m.has_rtdose is None or m.has_rtdose == f.has_rtdose)
            and (m.tag is None or m.tag == f.tag))


class RulesError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    sources: tuple[str, ...]  # 'file:line' of each rule, for logs

    def select(self, facts: CourseFacts) -> Rule:
        for rule in self.rules:
            if matches(rule.match, facts):
                return rule
        return DEFAULT_RULE


def load_rules(folder: Path, known_stages: Iterable[str]) -> RuleSet:
    """Read and validate every rules/*.yaml; raise RulesError naming file, line and key."""
    known = set(known_stages)
    rules: list[Rule] = []
    sources: list[str] = []
    problems: list[str] = []
    names: dict[str, str] = {}
    files = sorted(Path(folder).glob("*.yaml")) + sorted(Path(folder).glob("*.yml")) \
        if Path(folder).is_dir() else []
    for path in files:
        try:
            src = load_yaml(path)
        except YamlError as exc:
            problems.append(str(exc))
            continue
        items = src.data.get("rules") if isinstance(src.data, dict) else None
        if not isinstance(items, list):
            problems.append(f"{path}: expected a top-level 'rules:' list")
            continue
        for i, item in enumerate(items):
            try:
                rule = Rule.model_validate(item)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ("rules", i, *err["loc"])
                    msg = err["msg"]
                    if err["type"] == "extra_forbidden":
                        msg = "unknown key" + did_you_mean(
                            str(err["loc"][-1]), known_keys(Rule, tuple(err["loc"][:-1])))
                    problems.append(f"{src.where(loc)}: rules[{i}]."
                                    f"{'.'.join(map(str, err['loc']))}: {msg}")
                continue
            where = src.where(("rules", i))
            for j, stage in enumerate(rule.stages):
                if stage not in known:
                    problems.append(f"{src.where(('rules', i, 'stages', j))}: rules[{i}].stages: "
                                    f"unknown stage {stage!r}{did_you_mean(stage, sorted(known))}"
                                    f" (known: {', '.join(sorted(known))})")
            if rule.name in names:
                problems.append(f"{where}: rule name {rule.name!r} already used at "
                                f"{names[rule.name]}")
            names[rule.name] = where
            rules.append(rule)
            sources.append(where)
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), tuple(sources))


def check_references(rules: RuleSet, config) -> list[str]:
    """What a rule names that this configuration does not have: a destination missing from
    ``destinations:``, a model spec that names no backend (with the nearest known name)."""
    from rtnode.segmentation.registry import BACKENDS, ModelSpecError, parse_spec

    problems = []
    configured = sorted(config.destinations)
    for rule, where in zip(rules.rules, rules.sources):
        for name in rule.destinations:
            if name not in config.destinations:
                origin = config.source or "the embedded defaults"
                problems.append(
                    f"{where}: rule {rule.name!r}: destinations: unknown destination {name!r}"
                    f"{did_you_mean(name, configured)} (configured in {origin}: "
                    f"{', '.join(configured) or 'none'})")
        for spec in rule.models:
            try:
                parse_spec(spec)
            except ModelSpecError as exc:
                backend, _, target = spec.partition(":")
                backend = backend.strip().lower()
                if backend == "builtin":
                    hint = did_you_mean(f"builtin:{target.strip()}", ["builtin:body"])
                else:
                    hint = "" if backend in BACKENDS else did_you_mean(backend, list(BACKENDS))
                problems.append(f"{where}: rule {rule.name!r}: models: unknown model {spec!r}"
                                f"{hint}: {exc}")
    return problems
