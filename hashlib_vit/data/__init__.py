"""Data: protocols, sources, seeded splits, transforms and batch iterators."""
from .check import CheckResult, ProtocolReport, check_protocol, rule_sizes
from .datasets import Batch, FileBatches, FileSplit, Split, TensorBatches, make_batches
from .protocols import PROTOCOLS, Protocol, ProtocolData, export_splits, get_protocol
from .splits import (ListFile, class_balanced_split, parse_list_text, read_list_file, read_split_files,
                     split_checksum, split_lines, write_split_files)
from .transforms import TensorTransform, protocol_transforms

__all__ = [
    "PROTOCOLS", "Protocol", "ProtocolData", "get_protocol", "export_splits", "Split", "FileSplit",
    "TensorBatches", "FileBatches", "make_batches", "Batch", "TensorTransform", "protocol_transforms",
    "class_balanced_split", "split_checksum", "split_lines", "ListFile", "parse_list_text", "read_list_file",
    "read_split_files", "write_split_files", "check_protocol", "ProtocolReport", "CheckResult", "rule_sizes",
]
