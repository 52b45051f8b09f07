"""Table metadata: typed cells, unknown kept empty, and the cap's last row saying how many more there are."""

from __future__ import annotations

import math

import numpy as np

from pipelines.common.reporting import plan_table
from pipelines.common.safety import PlannedAction
from pipelines.common.tables import cell, column, table
from tests.metadata import columns, rows


def test_cells_keep_numbers_and_leave_unknown_empty():
    assert cell(np.int64(3)) == 3 and type(cell(np.int64(3))) is int
    assert cell(np.float64(0.5)) == 0.5 and cell(math.nan) is None and cell(None) is None
    assert cell(True) is True and cell("x") == "x"


def test_a_table_over_its_cap_ends_with_a_row_saying_how_many_more_and_where():
    value = table([column("resource"), column("n", "int")], ({"resource": f"r{i}", "n": i} for i in range(7)),
                  cap=5, rest="in the run logs")
    got = rows(value)
    assert len(got) == 6 and got[4] == {"resource": "r4", "n": 4}
    assert got[5] == {"resource": "… 2 more in the run logs", "n": None}
    assert [c.type for c in value.schema.columns] == ["string", "int"]


def test_plan_table_keeps_every_column_and_the_500_cap():
    actions = [PlannedAction(f"i-{n:04}", "over max runtime", "terminate", pool="p") for n in range(501)]
    value = plan_table(actions, [("i-kept", "kept: protected", "tag runs-fleet:protect", "p")],
                       marks={"i-0000": "2026-11-22T10:00:00Z"})
    assert columns(value) == ["resource", "outcome", "reason", "pool", "marked since"]
    got = rows(value)
    assert len(got) == 501 and got[0] == {"resource": "i-0000", "outcome": "terminate", "reason": "over max runtime",
                                          "pool": "p", "marked since": "2026-11-22T10:00:00Z"}
    assert got[-1]["resource"] == "… 2 more in the run logs"
    assert rows(plan_table([])) == []
