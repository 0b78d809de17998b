"""Data: protocols, sources, seeded splits, transforms and batch iterators."""
from .datasets import Batch, Split, TensorBatches
from .protocols import PROTOCOLS, Protocol, ProtocolData, get_protocol
from .splits import class_balanced_split, split_checksum, split_lines
from .transforms import TensorTransform

__all__ = [
    "PROTOCOLS", "Protocol", "ProtocolData", "get_protocol", "Split", "TensorBatches", "Batch",
    "TensorTransform", "class_balanced_split", "split_checksum", "split_lines",
]
