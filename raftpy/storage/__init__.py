"""Storage backends: where a node's term, vote, log and snapshot survive crashes."""

from raftpy.storage.base import Storage
from raftpy.storage.bootstrap import bootstrap
from raftpy.storage.file import FileStorage
from raftpy.storage.memory import MemoryStorage

__all__ = ["FileStorage", "MemoryStorage", "Storage", "bootstrap"]
