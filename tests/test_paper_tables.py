"""The paper-table protocols (cldl-, adp-, drelu- and gal-table) and the claims ledger: each paper's numbers
against its text, a smoke run of each on real MNIST, the aggregation, the verdicts, and the ledger
regenerated from the committed results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from paper_texts import PAPERS

from tune_div import reproduce
from tune_div.reproduce import claims
from tune_div.reproduce.adp_table import ADPTable
from tune_div.reproduce.cldl_table import CLDLTable
from tune_div.reproduce.drelu_table import DReLUTable
from tune_div.reproduce.gal_table import GALTable

REPO = Path(__file__).resolve().parents[1]
needs_text = pytest.mark.skipif(not PAPERS.is_dir(), reason="the papers' text is not next to the checkout")

# a few methods per table, covering each code path (surrogate, audit, single models, EAT's static source);
# ADP's 3 x ResNet-20 and GAL's 5 x Conv3 train as LeNet-5 here (--arch), to keep the default run short
SMOKE = {
    "cldl-table": "trs,cldl_344",
    "adp-table": "baseline,adp_205",
    "drelu-table": "dense_at,dense_drelu",
    "gal-table": "baseline,eat_gal",
}
EXTRA = {"adp-table": ["--arch", "lenet5"], "gal-table": ["--arch", "lenet5"]}


def paper_text(name: str) -> str:
    return (PAPERS / name).read_text()


def test_every_seed_paper_has_a_protocol():
    assert reproduce.names("*-table") == ["adp-table", "cldl-table", "drelu-table", "gal-table", "smd-table"]


@needs_text
def test_cldl_numbers_are_its_tables_4_and_6():
    text = paper_text("cldl_label_dependencies.txt")

    def table(title: str) -> dict[str, dict[float, tuple[float, ...]]]:
        block = text[text.index(title) :].split("**Table", 2)[1]
        out: dict[str, dict[float, tuple[float, ...]]] = {}
        attack = ""
        for line in block.splitlines():
            cells = re.sub(r"</?b>", "", line).split("\t")
            if len(cells) > 3 and re.fullmatch(r"[\d.]+", cells[1].strip()):
                attack = cells[0].strip().lower() or attack
                out.setdefault(attack, {})[float(cells[1])] = tuple(float(c) for c in cells[2:])
        return out

    mnist, fmnist = table("**Table 4.**"), table("**Table 6.**")
    cols = CLDLTable.paper_columns
    for attack, per_eps in CLDLTable.numbers["mnist"]["black_box"].items():
        for eps, values in per_eps.items():
            assert values[: cols.index("cldl_321") + 1] == mnist[attack][eps] and values[-1] is None
    for attack, per_eps in CLDLTable.numbers["fashion_mnist"]["black_box"].items():
        for eps, values in per_eps.items():
            assert values[:4] + values[-1:] == fmnist[attack][eps]
    assert set(mnist) == set(fmnist) == {"bim", "fgsm", "mim", "pgd"} == set(CLDLTable.numbers["mnist"]["black_box"])


@needs_text
def test_adp_numbers_are_the_mnist_columns_of_its_table_2():
    text = paper_text("adp_adaptive_diversity_promoting.txt")
    block = text[text.index("Table 2. Classification accuracy") : text.index("Table 3. Classification accuracy")]
    # each line holds the MNIST columns first, then CIFAR-10's
    firsts = [re.search(r"[εγc] = [\d.]+ ([\d.]+) ([\d.]+) ([\d.]+)", line) for line in block.splitlines()]
    found = [tuple(float(v) for v in m.groups()) for m in firsts if m]
    ours = [
        ADPTable.numbers["mnist"]["white_box"][column][eps]
        for column, eps in [
            ("fgsm", 0.1),
            ("fgsm", 0.2),
            ("bim", 0.1),
            ("bim", 0.15),
            ("pgd", 0.1),
            ("pgd", 0.15),
            ("mim", 0.1),
            ("mim", 0.15),
            ("jsma", 0.3),
            ("jsma", 0.6),
            ("cw_l2_c0.1", 28.0),
            ("cw_l2_c1", 28.0),
            ("cw_l2_c10", 28.0),
            ("ead_c5", 784.0),
            ("ead_c10", 784.0),
        ]
    ]
    assert found == ours


@needs_text
def test_drelu_numbers_are_its_table_1():
    text = " ".join(paper_text("drelu_dynamic_max_value_relu.txt").split())
    block = text[text.index("% Dense AT") : text.index("Table 2. Accuracy metrics")]
    rows = re.findall(r"(AT|TRADES-1|TRADES-6|D-ReLU- 10 −? ?\d) ((?:[\d.]+ \(\d\) ){6})", block)
    values = [tuple(float(v) for v in re.findall(r"([\d.]+) \(\d\)", cells)) for _, cells in rows]
    assert len(values) == 8
    columns = ["clean", "fgsm", "pgd", "apgd_ce", "apgd_dlr", "cw_l2"]
    for i, key in enumerate(DReLUTable.paper_columns):
        for c, column in enumerate(columns):
            threat = "clean" if column == "clean" else "white_box"
            eps = {"clean": 0.0, "cw_l2": 18.0}.get(column, 0.1)
            assert DReLUTable.paper_value("mnist", threat, column, eps, key) == values[i][c], (key, column)


@needs_text
def test_gal_numbers_are_the_conv3_rows_of_its_table_2():
    lines = paper_text("gal_diversity_training.txt").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Conv3 (mnist)"))
    rows = [re.findall(r"[\d.]+(?: / [\d.]+)?", line.replace("Conv3 (mnist)", "")) for line in lines[start : start + 4]]
    for key, cells in zip(GALTable.paper_columns, rows):
        assert GALTable.paper_value("mnist", "clean", "clean", 0.0, key) == float(cells[0])
        for attack, pair in zip(("fgsm", "rfgsm", "bim", "mim", "pgd_cw"), cells[1:]):
            small, large = (float(v) for v in pair.split(" / "))
            assert GALTable.paper_value("mnist", "black_box", attack, 0.1, key) == small
            assert GALTable.paper_value("mnist", "black_box", attack, 0.3, key) == large


@pytest.fixture(scope="module")
def smokes(real_data, tmp_path_factory):
    """One smoke run of each paper table (a few of its methods), through the installed command."""
    root = tmp_path_factory.mktemp("tables")
    env = {**os.environ, "TUNE_DIV_CACHE": str(root / "cache")}
    done = {}
    for name, methods in SMOKE.items():
        cmd = [sys.executable, "-m", "tune_div.reproduce", name, "--budget", "smoke", "--methods", methods]
        cmd += ["--n", "20", "--data-dir", str(real_data), "--out", str(root / "out"), *EXTRA.get(name, [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        done[name] = json.loads((root / "out" / f"{name}_mnist.json").read_text())
    return root, done


@pytest.mark.parametrize("name", list(SMOKE))
def test_a_smoke_run_writes_the_side_by_side_table(smokes, name):
    root, docs = smokes
    doc, cls = docs[name], reproduce.get(name)
    out = root / "out"
    assert {f"{name}_mnist.{e}" for e in ("md", "csv", "json", "png")} <= {p.name for p in out.iterdir()}
    md = (out / f"{name}_mnist.md").read_text()
    assert doc["settings"]["methods"] == SMOKE[name].split(",") and doc["settings"]["epochs"] == 1
    assert "REDUCED" in md and all(d in md for d in cls.deviations)  # every lost setting is stated
    assert ("ARCHITECTURE CHANGED: every model is a `lenet5`" in md) == (name in EXTRA)
    # every attack column of every attack set, at each of its ε, for each method; the audit at the L∞ sets
    skipped = [g for g in cls.attack_sets("mnist") if g.n]  # the smoke budget leaves the slow attacks out
    assert doc["not_run"] == [g.column_label(a) for g in skipped for a in g.attacks]
    assert not skipped or "not run at budget `smoke` (the slow attacks)" in md
    assert not any(r["column"] in {g.column(a) for g in skipped for a in g.attacks} for r in doc["rows"])
    for group in (g for g in cls.attack_sets("mnist") if not g.n):
        for attack in group.attacks:
            for eps in group.eps:
                rows = [
                    r
                    for r in doc["rows"]
                    if (r["threat"], r["column"], r["eps"]) == (group.threat, group.column(attack), eps)
                ]
                assert [r["method"] for r in rows] == doc["settings"]["methods"]
                assert all(r["n"] == 20 and 0 <= r["measured"] <= 100 for r in rows)
                for r in rows:  # the paper's value beside ours, as the class holds it
                    assert r["paper"] == cls.paper_value(
                        "mnist", group.threat, group.paper_column(attack), eps, r["method"]
                    )
                    run = doc["runs"][r["method"]][0]
                    assert r["measured"] == pytest.approx(
                        100 * run["acc"][group.threat][group.column(attack)][str(eps)]
                    )
        if group.versions:  # the worst of the versions includes the plain one: never above it
            for attack in group.attacks:
                for eps in group.eps:
                    for m in doc["settings"]["methods"]:
                        acc = doc["runs"][m][0]["acc"]["black_box"]
                        assert acc[group.column(attack)][str(eps)] <= acc[attack][str(eps)] + 1e-9
            assert doc["settings"]["version_seeds"] == 1  # the smoke budget: one seed of each surrogate size
            assert f"worst of {len(group.versions.members) * len(group.versions.losses)} versions" in md
        if group.audit:
            for eps in group.eps:
                for m in doc["settings"]["methods"]:
                    audit = next(r for r in doc["rows"] if (r["column"], r["eps"], r["method"]) == ("audit", eps, m))
                    pgd = [r for r in doc["rows"] if (r["threat"], r["eps"], r["method"]) == ("white_box", eps, m)]
                    assert audit["measured"] <= min(r["measured"] for r in pgd if r["column"] != "audit") + 1e-9
    shown = [r for r in doc["rows"] if r["paper"] is not None and r["threat"] != "clean"]
    assert shown and all(f"({r['paper']:.1f})" in md for r in shown)


def test_a_table_rerun_on_a_machine_without_the_cache_is_assembled_from_its_records(smokes, real_data, tmp_path):
    """The per-model records committed with a table stand for its models on a machine whose cache is lost:
    GAL's, whose EAT rows train on a static source model that is not retrained either."""
    import shutil

    root, docs = smokes
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    name = "gal-table"
    records = sorted(p.name for p in (out / "records").glob("*.json"))
    methods = SMOKE[name].split(",")
    assert [r for r in records if r.startswith(tuple(f"{m}_seed0_" for m in methods))]
    cmd = [sys.executable, "-m", "tune_div.reproduce", name, "--budget", "smoke", "--methods", SMOKE[name]]
    cmd += ["--n", "20", "--data-dir", str(real_data), "--out", str(out), "--no-mlflow", *EXTRA[name]]
    env = {**os.environ, "TUNE_DIV_CACHE": str(tmp_path / "empty-cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("from its record in") == len(methods), proc.stdout[-2000:]
    assert " epoch 1/1" not in proc.stdout and "static EAT source" not in proc.stdout
    assert not any((tmp_path / "empty-cache" / d).exists() for d in ("reproduce", "surrogates"))  # none trained
    again = json.loads((out / f"{name}_mnist.json").read_text())
    assert again["runs"] == docs[name]["runs"] and again["rows"] == docs[name]["rows"]


def test_each_smoke_run_is_an_mlflow_run_with_its_table(smokes):
    from mlflow import MlflowClient

    root, docs = smokes
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'out' / 'mlflow.db'}")
    for name, doc in docs.items():
        (run,) = client.search_runs([client.get_experiment_by_name(f"reproduce-{name}").experiment_id])
        row = next(r for r in doc["rows"] if r["threat"] != "clean")
        key = f"{row['threat']}/{row['column']}/eps_{row['eps']}/{row['method']}"
        assert run.data.metrics[key] == pytest.approx(row["measured"] / 100) and run.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
            f"{name}_mnist.{e}" for e in ("md", "csv", "json", "png")
        }


def test_the_aggregate_is_the_seed_mean_and_sample_std():
    """Two made-up seeds through the base class's aggregation, against numbers worked out here."""
    import statistics

    from tune_div.reproduce.paper_table import TableSettings

    s = TableSettings("mnist", ["dense_at"], 2, 1, 2000, "full", 10, None, None, "fast")
    runs = {
        "dense_at": [
            {
                "clean": c,
                "clean_n": 100,
                "acc": {
                    "white_box": {
                        "fgsm": {"0.1": a},
                        "pgd": {"0.1": a},
                        "apgd_ce": {"0.1": a},
                        "apgd_dlr": {"0.1": a},
                        "cw_l2": {"18.0": a},
                    }
                },
                "audit": {"0.1": a / 2},
            }
            for c, a in ((0.9, 0.5), (0.8, 0.3))
        ]
    }
    rows = {(r["column"], r["eps"]): r for r in DReLUTable().aggregate(s, runs)}
    assert rows[("clean", 0.0)]["measured"] == pytest.approx(85.0)
    assert rows[("clean", 0.0)]["std"] == pytest.approx(statistics.stdev([90.0, 80.0]))
    assert rows[("pgd", 0.1)]["measured"] == pytest.approx(40.0) and rows[("audit", 0.1)]["measured"] == pytest.approx(
        20.0
    )
    assert rows[("pgd", 0.1)]["ci_low"] is None  # several seeds: their spread, not one proportion's interval
    assert rows[("pgd", 0.1)]["paper"] == 87.70 and rows[("cw_l2", 18.0)]["n"] == 10


def doc_with(values: dict[str, tuple[float, float]], audit: dict[str, float] | None = None, epochs: int = 40) -> dict:
    """A result document with white-box PGD (measured, paper) per method at ε 0.1, and the audit."""
    rows = [
        {"threat": "white_box", "column": "pgd", "eps": 0.1, "method": m, "measured": v, "paper": p}
        for m, (v, p) in values.items()
    ]
    rows += [
        {"threat": "white_box", "column": "audit", "eps": 0.1, "method": m, "measured": v, "paper": None}
        for m, v in (audit or {}).items()
    ]
    settings = {"dataset": "mnist", "epochs": epochs, "paper_epochs": 40, "seeds": 1, "n": 1000, "budget": "full"}
    return {"protocol": "adp-table", "settings": settings, "rows": rows, "columns": {"pgd": "PGD"}}


CLAIM = claims.Claim("A beats B", "mnist", "white_box", ("pgd",), "a", ("b",), (0.1,))


@pytest.mark.parametrize(
    "values,audit,epochs,verdict,note",
    [
        ({"a": (80.0, 70.0), "b": (60.0, 50.0)}, {"a": 70.0, "b": 50.0}, 40, "holds", ""),
        ({"a": (80.0, 70.0), "b": (60.0, 50.0)}, {"a": 70.0, "b": 50.0}, 5, "holds at reduced budget", ""),
        ({"a": (80.0, 70.0), "b": (60.0, 50.0)}, {"a": 10.0, "b": 50.0}, 40, "does not hold", "fails under the audit"),
        (
            {"a": (50.0, 70.0), "b": (60.0, 50.0)},
            {"a": 70.0, "b": 50.0},
            40,
            "does not hold",
            "under the paper's attacks",
        ),
        ({"a": (80.0, 40.0), "b": (60.0, 50.0)}, None, 40, "holds", "the paper's own numbers do not show it"),
        ({"a": (80.0, 70.0)}, None, 40, "not run", "no pgd at ε 0.1 for b"),
        ({"a": (61.0, 70.0), "b": (60.0, 50.0)}, {"a": 61.0, "b": 60.0}, 40, "holds", "within the 95% interval"),
    ],
)
def test_a_claims_verdict(values, audit, epochs, verdict, note):
    row = claims.judge(CLAIM, doc_with(values, audit, epochs))
    assert row["verdict"] == verdict and note in row["note"], row
    if len(values) == 2:
        assert row["ours"] == f"PGD 0.1: {values['a'][0]:.1f} vs {values['b'][0]:.1f}"
        assert row["paper"] == f"PGD 0.1: {values['a'][1]:.1f} vs {values['b'][1]:.1f}"
    assert claims.judge(CLAIM, None)["verdict"] == "not run"


def test_a_one_seed_run_says_its_verdict_is_not_confirmed_over_seeds():
    one = doc_with({"a": (80.0, 70.0), "b": (60.0, 50.0)}, {"a": 70.0, "b": 50.0})
    two = {**one, "settings": {**one["settings"], "seeds": 2}}
    assert "one seed: not confirmed over seeds" in claims.judge(CLAIM, one)["note"]
    assert "one seed" not in claims.judge(CLAIM, two)["note"]


def test_the_ledger_takes_the_run_nearest_the_papers_budget_and_never_a_smoke_run(tmp_path):
    short, full = (
        doc_with({"a": (80.0, 70.0), "b": (60.0, 50.0)}, epochs=5),
        doc_with({"a": (50.0, 70.0), "b": (60.0, 50.0)}),
    )
    smoke = {**doc_with({"a": (90.0, 70.0), "b": (10.0, 50.0)}), "settings": {**full["settings"], "budget": "smoke"}}
    for name, doc in (("short", short), ("full", full), ("smoke", smoke)):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    assert claims.pick([short, full]) is full
    # a method trained longer (D-ReLU's whole routine) brings a run nearer; one trained shorter, farther
    longer = {**short, "settings": {**short["settings"], "methods": ["a", "b"], "epochs_for": {"a": 40}}}
    shorter = {**full, "settings": {**full["settings"], "methods": ["a", "b"], "epochs_for": {"a": 1}}}
    assert claims.pick([short, longer]) is longer and claims.pick([full, shorter]) is full
    assert claims.pick([longer, shorter]) is longer  # (1 + 5/40) / 2 of the paper's epochs against (1/40 + 1) / 2
    audited = {k: {**full, "settings": {**full["settings"], "audit": k}} for k in (None, "fast", "standard")}
    assert claims.pick(list(audited.values())) is audited["standard"]  # same budget: the strongest audit
    assert claims.pick([audited[None], audited["fast"]]) is audited["fast"]
    rows = [r for r in claims.ledger(tmp_path) if r["protocol"] == "adp-table"]
    assert {r["source"] for r in rows} == {"full.json"}


def test_a_claim_is_judged_on_a_run_that_trained_its_methods_before_one_nearer_the_budget():
    base = doc_with({"a": (80.0, 70.0), "b": (60.0, 50.0)}, epochs=5)
    both = {**base, "settings": {**base["settings"], "methods": ["a", "b", "c"]}}
    nearer = doc_with({"a": (80.0, 70.0)})
    without_b = {**nearer, "settings": {**nearer["settings"], "methods": ["a", "c"]}}
    assert claims.pick([both, without_b]) is without_b  # by budget alone
    assert claims.covering(CLAIM, [both, without_b]) == [both]
    assert claims.judge(CLAIM, claims.pick(claims.covering(CLAIM, [both, without_b])))["verdict"] != "not run"
    assert claims.covering(CLAIM, [without_b]) == [without_b]  # none has them all: the ledger says what is missing
    assert claims.covering(CLAIM, [nearer, without_b]) == [nearer]  # a run that does not list its methods counts


@pytest.mark.skipif(not (REPO / "docs" / "claims.md").is_file(), reason="no ledger committed")
def test_the_committed_ledger_is_regenerated_from_the_committed_results(tmp_path, monkeypatch):
    from tune_div.cli import reproduce as reproduce_cli

    monkeypatch.chdir(REPO)
    out = tmp_path / "claims.md"
    assert reproduce_cli.main(["claims", "--from", "reproductions", "--out", str(out)]) == 0
    assert out.read_text() == (REPO / "docs" / "claims.md").read_text()
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads((REPO / "docs" / "claims.json").read_text())


def test_claims_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from tune_div.cli import reproduce as reproduce_cli

    for argv, needle in (
        (["claims", "--from", str(tmp_path / "none")], "is not a folder"),
        (["claims", "--from", str(tmp_path), "--out", str(tmp_path / "x.txt")], "should name a Markdown file"),
    ):
        with pytest.raises(SystemExit) as exc:
            reproduce_cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_the_budget_names_an_architecture_only_where_it_was_changed():
    base = {"dataset": "mnist", "epochs": 50, "seeds": 1, "n": 1000}
    smd = {"protocol": "smd-table", "settings": {**base, "arch": "lenet5"}}  # the dataset's own: the paper's
    assert claims.budget(smd) == ("50 of 50 epochs; 1 seed(s); 1000 points", False)
    smd_other = {"protocol": "smd-table", "settings": {**base, "arch": "resnet20"}}
    assert claims.budget(smd_other)[1] and "every model a resnet20" in claims.budget(smd_other)[0]
    adp = {"protocol": "adp-table", "settings": {**base, "epochs": 40, "paper_epochs": 40, "arch": "lenet5"}}
    assert claims.budget(adp) == ("40 of 40 epochs; every model a lenet5; 1 seed(s); 1000 points", True)


def settings_of(*argv: str):
    from tune_div.cli.reproduce import build_parser

    args = build_parser("tune-div reproduce").parse_args(list(argv))
    return reproduce.get(args.protocol)().settings(args)


def test_the_training_subset_is_the_flag_else_the_budget_else_the_protocols_default():
    assert settings_of("gal-table").subset == GALTable.default_subset["mnist"] == 30000
    assert settings_of("gal-table", "--subset", "all").subset is None
    assert settings_of("gal-table", "--subset", "5000").subset == 5000
    assert settings_of("gal-table", "--budget", "smoke").subset == 1000
    assert settings_of("cldl-table").subset is None  # a protocol without a default trains on every image
    s = settings_of("gal-table")
    cfg = GALTable().train_config(s, GALTable.method("gal"), 0)
    assert cfg.subset == 30000 and GALTable().surrogate_config(s)["subset"] == 30000  # the surrogate's too


def test_a_subset_run_says_reduced_in_its_header_and_in_the_ledgers_budget():
    from tune_div.reproduce.paper_table import markdown

    s = settings_of("gal-table", "--epochs", "10")
    doc = {
        "protocol": "gal-table",
        "paper": GALTable.paper,
        "table": GALTable.table,
        "settings": s.public(),
        "labels": {m.key: m.label for m in GALTable.methods},
        "rows": [],
        "runs": {},
        "machine": "test",
        "seconds": 60.0,
        "deviations": list(GALTable.deviations),
    }
    md = markdown(doc)
    assert "REDUCED: every model trains on a seeded subset of 30,000 training images" in md
    assert claims.budget(doc) == ("10 of 10 epochs on 30,000 training images; 1 seed(s); 1000 points", True)
    full = {**doc, "settings": settings_of("gal-table", "--epochs", "10", "--subset", "all").public()}
    assert "REDUCED" not in markdown(full).split("##")[0]
    assert claims.budget(full) == ("10 of 10 epochs; 1 seed(s); 1000 points", False)


@pytest.mark.parametrize(
    "value,needle",
    [("0", "subset=0 is not valid"), ("many", "--subset: expected a number of training images or 'all', got 'many'")],
)
def test_a_bad_subset_is_one_line_exit_2_before_any_work(value, needle, tmp_path, capsys):
    from tune_div.cli import reproduce as reproduce_cli

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        reproduce_cli.main(["gal-table", "--subset", value, "--out", str(out), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_the_drelu_rows_train_the_papers_whole_routine_and_the_header_says_where_they_stopped():
    from tune_div.reproduce.paper_table import markdown

    s = settings_of("drelu-table")
    whole = {f"{a}_{r}": 2000 for a in ("dense", "shallow_cnn") for r in ("at", "drelu")}
    assert s.epochs == 20 and s.epochs_for == whole
    table = DReLUTable()
    drelu, at, trades = (
        table.train_config(s, DReLUTable.method(k), 0) for k in ("dense_drelu", "dense_at", "dense_trades1")
    )
    assert (drelu.epochs, drelu.monitor, drelu.early_stop_patience) == (2000, "loss", 10)
    # AT: the whole natural routine, then the paper's 10 epochs on PGD examples
    assert (at.epochs, at.monitor, at.early_stop_patience, at.adv_train["retrain_epochs"]) == (2000, "nll", 10, 10)
    assert (trades.epochs, trades.adv_train) == (20, None)
    assert settings_of("drelu-table", "--epochs", "5").epochs_for == {}  # --epochs means every model
    assert settings_of("drelu-table", "--budget", "smoke").epochs_for == {}
    two = settings_of("drelu-table", "--methods", "dense_at,dense_drelu").epochs_for
    assert two == {"dense_at": 2000, "dense_drelu": 2000}
    flag = settings_of("drelu-table", "--epochs-for", "dense_drelu=300", "--epochs-for", "dense_at=3")
    assert flag.epochs_for == {**whole, "dense_at": 3, "dense_drelu": 300}
    doc = {
        "protocol": "drelu-table",
        "paper": DReLUTable.paper,
        "table": DReLUTable.table,
        "settings": settings_of("drelu-table", "--methods", "dense_at,dense_drelu").public(),
        "labels": {m.key: m.label for m in DReLUTable.methods},
        "rows": [],
        "runs": {
            "dense_drelu": [{"seed": 0, "epochs_trained": 263, "flags": []}],
            "dense_at": [{"seed": 0, "epochs_trained": 34, "flags": []}],
        },
        "machine": "test",
        "seconds": 60.0,
        "deviations": list(DReLUTable.deviations),
    }
    header = markdown(doc).splitlines()[2]
    assert (
        "20 epochs (REDUCED: the paper trains 2000); Dense AT: 2000 epochs at most (early stopping: trained 34); "
        "Dense D-ReLU: 2000 epochs at most (early stopping: trained 263)" in header
    )
    assert claims.budget(doc) == ("20 of 2000 epochs, dense_at 2000, dense_drelu 2000; 1 seed(s); 1000 points", True)


@pytest.mark.parametrize("item", ["dense_drelu", "dense_drelu=0", "nope=3"])
def test_a_bad_epochs_for_is_one_line_exit_2_before_any_work(item, tmp_path, capsys):
    from tune_div.cli import reproduce as reproduce_cli

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        reproduce_cli.main(["drelu-table", "--epochs-for", item, "--out", str(out), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "--epochs-for expects METHOD=N" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
