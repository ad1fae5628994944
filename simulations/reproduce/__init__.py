"""The reproduction suite: the paper's Tables 1–6 as declarative scenarios (``scenarios/*.toml``), run cell by
cell with resume (:mod:`.runner`), by an executor per kind of table (:mod:`.executors`: ADRA, AMIA, defenses),
reported with intervals beside the paper's numbers (:mod:`.report`). ``archleak reproduce TABLE``."""
