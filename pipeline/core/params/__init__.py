"""params.yaml, one module per section, so that a stage's DVC deps hold the schema of the sections it reads and no
other: `schema` (reading the file and the validator every section uses), `data` (data, sbd, dataset, prepare: the
data stages), `train` (train), `models` (models), `evaluate`, `export`, `serving`, `render`, `tracking`, and `whole`
(every section at once, for tools and tests; no stage imports it). Empty on purpose: importing any section runs it.
"""
