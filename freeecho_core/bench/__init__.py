"""Benchmarks that store JSON under results/bench/ (speed and memory belong here, not in timed tests):
`timing` (records, the machine, timed calls), `network` (one evaluation D(x, sigma), FLOPs, activation memory,
op variants, profiles), `sampling` (one video, ours beside the authors' cost profile; the stored model's videos),
`training` (optimizer steps), `pipeline` (the OT solve, the phantom), `data` (the prepared-clip store and its
DataLoader), `suites` (the named sets `freeecho bench --suite` runs) and `report` (records collected and read
back into the book's tables).
"""
