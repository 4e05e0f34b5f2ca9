"""Prepared data: the packed arrays the prepare stage writes, the Dataset that reads them, and model input."""
