"""bench.popularity: both ways of ranking agree, and the table reports it."""

from __future__ import annotations

from bench import popularity
from inference.catalog import Popularity


def test_the_baseline_ranks_like_top():
    pop, ts = popularity.filled(300)
    pop.top(20)
    _, ts = popularity.run(pop, ts, 300, 20, Popularity.top, seed=0)  # counts move the kept top
    for n in (1, 20, 400):
        assert [pop._rank[i] for i in pop.top(n)] == [pop._rank[i] for i in popularity.ranked_by_scan(pop, n)]


def test_the_report_says_both_agree(capsys):
    assert popularity.main(["--sizes", "500", "--batches", "5", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 500 "))
    assert row.rstrip(" |").endswith("yes")
