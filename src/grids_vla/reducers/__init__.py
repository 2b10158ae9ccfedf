"""Token reducers under one interface: GridS and the peers it is compared with."""

from .base import Layout, PrefixMode, ReducerOutput, TokenReducer
from .dense import DenseReducer
from .fastv import FastVPruner, fastv_prune, fastv_scores
from .perceiver import PerceiverReducer
from .pooling import UniformPoolReducer, pooling_grid
from .random_patches import RandomPatchReducer
from .registry import create_reducer, get_reducer_class, list_reducers, register_reducer
from .tokenlearner import TokenLearnerReducer
from .tome import ToMeReducer, bipartite_merge
from .topk import TopKReducer

__all__ = [
    "DenseReducer",
    "FastVPruner",
    "Layout",
    "PerceiverReducer",
    "PrefixMode",
    "RandomPatchReducer",
    "ReducerOutput",
    "ToMeReducer",
    "TokenLearnerReducer",
    "TokenReducer",
    "TopKReducer",
    "UniformPoolReducer",
    "bipartite_merge",
    "create_reducer",
    "fastv_prune",
    "fastv_scores",
    "get_reducer_class",
    "list_reducers",
    "pooling_grid",
    "register_reducer",
]
