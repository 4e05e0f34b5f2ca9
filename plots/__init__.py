"""The page `dvc plots show` and `dvc plots diff` write, made to draw without internet (see `offline_page`)."""
