"""YAML rule files (positions kept), the pydantic schema, and matching rules to modules."""

from parc_surgery.rules.loading import (
    BUILTIN_DEFAULTS,
    RuleSet,
    default_rules_for,
    load_rules,
    parse_rules,
    shipped_configs,
)
from parc_surgery.rules.matching import Match, MatchResult, choose_stages, is_depthwise_conv, match
from parc_surgery.rules.schema import (
    IMPLS,
    KNOWN_REPLACEMENTS,
    MatchSpec,
    ReplaceOptions,
    ReplaceSpec,
    RuleFileSpec,
    RuleSpec,
    known_replacements,
)

__all__ = [
    "BUILTIN_DEFAULTS",
    "IMPLS",
    "KNOWN_REPLACEMENTS",
    "Match",
    "MatchResult",
    "MatchSpec",
    "ReplaceOptions",
    "ReplaceSpec",
    "RuleFileSpec",
    "RuleSet",
    "RuleSpec",
    "choose_stages",
    "default_rules_for",
    "is_depthwise_conv",
    "known_replacements",
    "load_rules",
    "match",
    "parse_rules",
    "shipped_configs",
]
