"""Sharded checkpoint directories read as one checkpoint, on the CPU, without a process group.

The layout Lightning's ``FSDPStrategy(state_dict_type="sharded")`` writes (xlm-core's
``trainer_strategy=fsdp``, which needs CUDA) is built here as its ``save_checkpoint`` builds it
(lightning 2.5.2, ``lightning/pytorch/strategies/fsdp.py``): the weights under ``model`` and each
optimizer's state, keyed by parameter name, under ``optimizer_<i>``, saved with
``torch.distributed.checkpoint.save`` into the directory, then every other entry with
``torch.save`` as ``meta.pt``; here from one process, so with one shard file. arlm's own FSDP2
layout with two shard files is read in ``tests/e2e/test_distributed_cli.py``.
"""

import pickle
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from arlm.checkpoints.read import CheckpointError, read_checkpoint
from arlm.checkpoints.sharded import sharded_directory, stored_shapes
from arlm.runtime.consolidate import consolidate


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))


def trained_tiny():
    torch.manual_seed(0)
    module = Tiny()
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1)
    module.model(torch.tensor([[1, 2]])).sum().backward()
    optimizer.step()
    return module, optimizer


def write_fsdp_strategy_layout(directory, module, optimizer, meta):
    """What ``FSDPStrategy.save_checkpoint`` writes with ``state_dict_type="sharded"``."""
    directory.mkdir()
    converted = {"model": module.state_dict(), "optimizer_0": get_optimizer_state_dict(module, optimizer)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group: assuming a single process"
        dcp.save(converted, checkpoint_id=directory, no_dist=True)
    torch.save(meta, directory / "meta.pt")


def test_the_fsdp_strategy_layout_reads_as_the_single_file_a_one_process_run_writes(tmp_path):
    module, optimizer = trained_tiny()
    directory = tmp_path / "last.ckpt"
    write_fsdp_strategy_layout(directory, module, optimizer, {"global_step": 7, "hyper_parameters": {"lr": 0.1}})

    for named in (directory, directory / "meta.pt"):
        assert sharded_directory(named) == directory
        contents = read_checkpoint(named).contents
        assert contents["global_step"] == 7 and contents["hyper_parameters"] == {"lr": 0.1}
        assert contents["state_dict"].keys() == module.state_dict().keys()
        assert all(torch.equal(contents["state_dict"][k], v) for k, v in module.state_dict().items())
        (state,) = contents["optimizer_states"]
        expected = optimizer.state_dict()
        assert state["param_groups"][0]["params"] == expected["param_groups"][0]["params"] == [0, 1]
        for index in (0, 1):
            assert torch.equal(state["state"][index]["exp_avg"], expected["state"][index]["exp_avg"])
    assert stored_shapes(directory, "model") == {"model.0.weight": (5, 3), "model.1.weight": (5, 3)}


def test_the_consolidated_file_holds_what_the_directory_holds_and_loads_into_an_optimizer(tmp_path):
    module, optimizer = trained_tiny()
    directory = tmp_path / "last.ckpt"
    write_fsdp_strategy_layout(directory, module, optimizer, {"global_step": 7})
    target = tmp_path / "one.ckpt"
    consolidate(directory, target)
    single = torch.load(target, weights_only=True)
    fresh = torch.optim.AdamW(Tiny().parameters(), lr=0.1)
    fresh.load_state_dict(single["optimizer_states"][0])
    assert torch.equal(fresh.state_dict()["state"][1]["exp_avg_sq"], optimizer.state_dict()["state"][1]["exp_avg_sq"])
    with pytest.raises(FileExistsError, match="one.ckpt exists"):
        consolidate(directory, target)


def test_an_incomplete_directory_is_named_with_what_is_missing(tmp_path):
    module, optimizer = trained_tiny()
    directory = tmp_path / "last.ckpt"
    write_fsdp_strategy_layout(directory, module, optimizer, {"global_step": 7})
    (directory / "__0_0.distcp").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete sharded checkpoint: __0_0.distcp is missing \(0 shard files"):
        read_checkpoint(directory)
    (directory / "meta.pt").unlink()
    with pytest.raises(CheckpointError, match="meta.pt \\(rank 0's metadata\\) is missing"):
        read_checkpoint(directory)


class Payload:
    def __reduce__(self):
        return (print, ("ran code from a checkpoint",))


def test_metadata_that_asks_to_build_other_objects_is_refused(tmp_path):
    module, optimizer = trained_tiny()
    directory = tmp_path / "last.ckpt"
    write_fsdp_strategy_layout(directory, module, optimizer, {"global_step": 7})
    (directory / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="builtins.print is not part of a checkpoint's metadata"):
        read_checkpoint(directory)
