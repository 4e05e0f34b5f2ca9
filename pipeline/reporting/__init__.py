"""Reporting: pictures for people (label colours, overlays, panels, comparison grids, matplotlib figures) and the
render stages' work. Nothing here changes a model or a metric."""
