"""``visfore compare-plans`` (visfore.planning.paired_comparison): paired episodes of two
controllers, one-sided Fisher exact and exact McNemar tests.

The p values are checked against closed forms written out here (hypergeometric and
binomial tails with math.comb); the command reads real ``visfore plan`` outputs (oracle
and random, a few steps) and hand-written ``episodes.json`` files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from visfore_cli_testutils import invoke as _cli
from visfore_cli_testutils import one_error_line as _one_error_line

from visfore.core.errors import VisforeError
from visfore.planning.goal_reaching import episode_reset_seed
from visfore.planning.paired_comparison import compare_plans, paired_test

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fisher_greater(a: int, b: int, n: int) -> float:
    """P(X >= a) for X hypergeometric: a + b successes among 2n trials, n on side A."""
    total = a + b
    return sum(math.comb(n, k) * math.comb(n, total - k) for k in range(a, min(n, total) + 1)) / math.comb(2 * n, total)


def _binomial_greater(k: int, m: int) -> float:
    return sum(math.comb(m, i) for i in range(k, m + 1)) / 2**m


def test_paired_test_counts_and_p_values():
    # 10 pairs: A solves 0-6, B solves 5-8 -> A 7, B 4, only A 5 (0-4), only B 2 (7, 8)
    a = [0.01] * 7 + [0.2] * 3
    b = [0.3] * 5 + [0.01] * 4 + [0.3]
    r = paired_test(a, b, 0.02, a="latent", b="cdna")
    assert (r.n, r.a_successes, r.b_successes, r.only_a, r.only_b) == (10, 7, 4, 5, 2)
    assert r.a_closer == 6  # 0.01 < 0.3 (pairs 0-4) and 0.2 < 0.3 (pair 9); 5-8 are ties or losses
    assert r.fisher_p == pytest.approx(_fisher_greater(7, 4, 10), rel=1e-9)
    assert r.mcnemar_p == pytest.approx(_binomial_greater(5, 7), rel=1e-9)
    assert r.a_mean_distance == pytest.approx(sum(a) / 10) and r.to_dict()["b"] == "cdna"
    # the reverse direction: B better than A is not supported
    rev = paired_test(b, a, 0.02)
    assert rev.mcnemar_p == pytest.approx(_binomial_greater(2, 7)) and rev.fisher_p > 0.9


def test_paired_test_threshold_and_no_discordant_pairs():
    a = [0.01, 0.04, 0.3]
    assert paired_test(a, a, 0.02).mcnemar_p == 1.0  # no discordant pair
    wider = paired_test(a, [0.3, 0.3, 0.3], 0.05)
    assert (wider.a_successes, wider.only_a) == (2, 2)
    assert wider.mcnemar_p == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("a", "b", "threshold", "message"),
    [
        ([0.1], [0.1, 0.2], 0.02, "as many distances on each side, got 1 and 2"),
        ([], [], 0.02, "no paired episodes"),
        ([0.1], [0.1], 0.0, "--threshold must be a positive distance in metres, got 0.0"),
        ([math.nan], [0.1], 0.02, "is not finite"),
    ],
)
def test_paired_test_bad_input(a, b, threshold, message):
    with pytest.raises(VisforeError, match=message.replace("(", r"\(")):
        paired_test(a, b, threshold)


def _plan_output(path: Path, controller: str, distances: list[float], seed: int = 8, threshold: float = 0.02) -> Path:
    path.mkdir(parents=True)
    episodes = [
        {"controller": controller, "episode": k, "reset_seed": episode_reset_seed(seed, k), "final_distance": d,
         "success": d < threshold, "success_threshold": threshold}
        for k, d in enumerate(distances)
    ]  # fmt: skip
    (path / "episodes.json").write_text(json.dumps(episodes))
    return path


def test_compare_plans_pairs_by_reset_seed_across_runs(tmp_path):
    a8 = _plan_output(tmp_path / "a8", "learned-latent-cem", [0.01, 0.01, 0.3])
    a9 = _plan_output(tmp_path / "a9", "learned-latent-cem", [0.01, 0.3], seed=9)
    b8 = _plan_output(tmp_path / "b8", "learned-cem", [0.3, 0.01, 0.3, 0.01])  # one episode more than A
    b9 = _plan_output(tmp_path / "b9", "learned-cem", [0.3, 0.3], seed=9)
    r = compare_plans([str(a8), str(a9)], [str(b9), str(b8)])  # order does not matter: reset seeds pair
    assert (r.n, r.a_successes, r.b_successes, r.only_a, r.only_b, r.unpaired) == (5, 3, 1, 2, 0, 1)
    assert (r.a, r.b, r.threshold) == ("learned-latent-cem", "learned-cem", 0.02)
    assert compare_plans([str(a8)], [str(b8)], threshold=0.5).a_successes == 3


def test_compare_plans_errors(tmp_path):
    a = _plan_output(tmp_path / "a", "learned-cem", [0.01])
    other = _plan_output(tmp_path / "other", "random", [0.3], seed=1)
    loose = _plan_output(tmp_path / "loose", "random", [0.3], threshold=0.05)
    with pytest.raises(VisforeError, match="share no episode"):
        compare_plans([str(a)], [str(other)])
    with pytest.raises(VisforeError, match="2 success thresholds"):
        compare_plans([str(a)], [str(loose)])
    with pytest.raises(VisforeError, match="not a visfore plan output"):
        compare_plans([str(tmp_path)], [str(a)])
    with pytest.raises(VisforeError, match="repeats episode reset seed"):
        compare_plans([str(a), str(a)], [str(other)])
    with pytest.raises(VisforeError, match="controller 'oracle' is not one of"):
        compare_plans([str(a)], [str(a)], a_controller="oracle")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "episodes.json").write_text(json.dumps([{"controller": "random"}]))
    with pytest.raises(VisforeError, match="has an entry without controller, reset_seed and final_distance"):
        compare_plans([str(broken)], [str(a)])


def test_compare_plans_cli_on_real_plan_output(tmp_path):
    out = tmp_path / "plan"
    small = ["--iterations", "2", "--samples", "8", "--elites", "2", "--blocks", "2", "--repeat", "2"]
    result = _cli("plan", "--env", "reacher", "--size", 32, "--controllers", "oracle,random", "--episodes", 2,
                  "--steps", 3, *small, "--no-gifs", "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    line = _one_error_line(_cli("compare-plans", "--a", out, "--b", out))
    assert "has the controllers oracle-cem, random: name one with --a-controller" in line
    result = _cli("compare-plans", "--a", out, "--a-controller", "oracle", "--b", out, "--b-controller", "random",
                  "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert (r["a"], r["b"], r["n"], r["threshold"]) == ("oracle-cem", "random", 2, 0.02)
    episodes = json.loads((out / "episodes.json").read_text())
    oracle = [e["final_distance"] for e in episodes if e["controller"] == "oracle-cem"]
    assert r["a_mean_distance"] == pytest.approx(sum(oracle) / 2)
    table = _cli("compare-plans", "--a", out, "--a-controller", "oracle", "--b", out, "--b-controller", "random")
    assert table.exit_code == 0 and "exact McNemar p =" in table.output and "2 paired episodes" in table.output
    assert "--b is required" in _one_error_line(_cli("compare-plans", "--a", out))
