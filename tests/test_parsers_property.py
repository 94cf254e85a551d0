"""Property-based tests of everything that parses user input: any input either gives a valid object or
raises the project's UserError; nothing else escapes (no KeyError, TypeError, AttributeError, ...).

Random and mutated exported configs and search spaces (YAML), random ``--hparam`` and
``--attack-option`` strings. The default run is small enough for the default suite; ``pytest -m slow``
runs the same properties on many more examples."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune_div import attacks, data, defenses
from tune_div.cli.common import parse_key_values
from tune_div.errors import UserError
from tune_div.search import space as search_space
from tune_div.search.settings import check_objective
from tune_div.train import config_file

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
GOOD_CONFIG = {
    "defense": "smd",
    "dataset": "mnist",
    "arch": "lenet5",
    "n_members": 2,
    "hparams": {"lam": 0.5},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.001, "seed": 0, "adv_train": {"attack": "fgsm"}},
    "objective": {"attack": "pgd_cw_logits", "eps": 0.1, "steps": 10, "n": 100, "seed": 0, "audit": "fast"},
    "metrics": {"val_clean_acc": 0.9},
    "source": {"experiment": "smd-mnist"},
}
GOOD_SPACE = {
    "defense": "cldl",
    "params": {
        "gamma": {"type": "float", "low": 1.0, "high": 6.0},
        "embed_dim": {"type": "int", "low": 8, "high": 128, "paper": 64},
    },
    "train": {"lr": {"enabled": True}, "adv_attack": {"enabled": True}, "adv_eps": {"enabled": True}},
}


@st.composite
def mutated(draw, doc):
    """``doc`` with a few random edits: a value replaced (at any depth), a key removed or added."""
    doc = yaml.safe_load(yaml.safe_dump(doc))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        node, path = doc, []
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node, key=str)))
            path.append((node, key))
            node = node[key]
        if not path:
            doc[draw(st.text(max_size=8))] = draw(values)
            continue
        parent, key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8))] = draw(values)
    return doc


def parse_config(tmp_path, doc) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True))
    try:
        parsed = config_file.read(path)
        if parsed.get("objective") is not None:
            check_objective(parsed["objective"])
        cfg = config_file.to_train_config(parsed)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert cfg.defense in defenses.names() and cfg.epochs >= 1 and math.isfinite(cfg.lr) and cfg.lr > 0


def parse_space(doc, dataset: str) -> None:
    try:
        parsed = search_space.parse(doc, "space.yaml", None, dataset)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    for p in parsed.params:  # a valid space starts inside its own ranges
        if p.type == "categorical":
            assert p.paper is None or p.paper in p.choices
        else:
            assert p.low < p.high and (p.paper is None or p.low <= p.paper <= p.high)


def parse_hparams(defense: str, items: list[str]) -> None:
    try:
        built = defenses.build(defense, **parse_key_values(items))
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert set(built.hparams) == set(defenses.defaults(defense))


def parse_attack_option(attack: str, text: str, eps: float) -> None:
    try:
        options = parse_key_values(text.split(","), "--attack-option")
        attacks.get(attack).options(eps, **options)
    except UserError as exc:
        assert "\n" not in str(exc)


key_value = st.tuples(
    st.sampled_from(
        [
            "lam",
            "alpha",
            "beta",
            "gamma",
            "width",
            "distill_steps",
            "steps",
            "n_queries",
            "p_init",
            "rand_init",
            "preset",
            "x",
            "",
        ]
    ),
    st.one_of(
        st.text(max_size=6),
        st.integers(-5, 50).map(str),
        st.floats(allow_nan=True).map(repr),
        st.sampled_from(["true", "false", "fast"]),
    ),
)
items = st.lists(st.one_of(key_value.map("=".join), st.text(max_size=10)), max_size=4)


@FAST
@given(doc=st.one_of(mutated(GOOD_CONFIG), values, st.text(max_size=80)))
def test_exported_config_parses_or_says_why(doc, tmp_path_factory):
    parse_config(tmp_path_factory.mktemp("cfg"), doc)


@FAST
@given(doc=st.one_of(mutated(GOOD_SPACE), values), dataset=st.sampled_from(data.names()))
def test_search_space_parses_or_says_why(doc, dataset):
    parse_space(doc, dataset)


@FAST
@given(defense=st.sampled_from(defenses.names()), items=items)
def test_hparam_strings_parse_or_say_why(defense, items):
    parse_hparams(defense, items)


@FAST
@given(attack=st.sampled_from(attacks.names()), text=items.map(",".join), eps=st.floats(allow_nan=True))
def test_attack_option_strings_parse_or_say_why(attack, text, eps):
    parse_attack_option(attack, text, eps)


@pytest.mark.slow
@THOROUGH
@given(
    config=st.one_of(mutated(GOOD_CONFIG), values, st.text(max_size=200)),
    space=st.one_of(mutated(GOOD_SPACE), values),
    dataset=st.sampled_from(data.names()),
    defense=st.sampled_from(defenses.names()),
    attack=st.sampled_from(attacks.names()),
    hp=items,
    eps=st.floats(allow_nan=True),
)
def test_every_parser_thoroughly(config, space, dataset, defense, attack, hp, eps, tmp_path_factory):
    parse_config(tmp_path_factory.mktemp("cfg"), config)
    parse_space(space, dataset)
    parse_hparams(defense, hp)
    parse_attack_option(attack, ",".join(hp), eps)
