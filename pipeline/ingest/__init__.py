"""Data ingest: fetch the archives, extract them safely, and pack their image/label pairs into prepared arrays
(the download, extract, sbd and prepare stages)."""
