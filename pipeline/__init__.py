"""A reproducible semantic-segmentation pipeline for PASCAL VOC 2012."""
