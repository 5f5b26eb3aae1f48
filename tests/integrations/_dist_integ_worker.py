"""One rank of the framework callbacks' 2-process gloo tests (started by torchrun from
test_clip_distributed.py, not collected by pytest).

    torchrun --nproc_per_node 2 _dist_integ_worker.py OUT_DIR MODE    MODE: hf_ddp | pl_ddp | pl_fsdp
    python _dist_integ_worker.py OUT_DIR MODE --single                  the 1-process reference

Each trains the same small model for a few steps with the resgrad callback (clip="both",
clipping on), every optimizer step covering the whole dataset (in 2 accumulated
micro-batches per rank, but for FSDP2), and rank 0 writes what was
logged: the norms must not depend on how many ranks the batch was split over.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

N, STEPS = 16, 3
ACC = 2  # gradient accumulation micro-batches per optimizer step (DDP: no_sync on the first)
CLIP = 1e-2


def _hf(out: Path, single: bool) -> dict:
    import transformers

    from resgrad.integrations.hf import GradientMonitorCallback

    cfg = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 32, (N, 8), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": i, "labels": i} for i in ids]
    world = 1 if single else int(os.environ["WORLD_SIZE"])
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf"), per_device_train_batch_size=N // world // ACC,
        gradient_accumulation_steps=ACC, max_steps=STEPS,
        logging_steps=1, learning_rate=1e-2, max_grad_norm=CLIP, report_to=[], save_strategy="no",
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, ddp_backend=None if single else "gloo")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    GradientMonitorCallback(clip="both", trainer=trainer)
    trainer.train()
    logs = [{k: v for k, v in h.items() if k == "grad_norm" or k.startswith("resgrad/")}
            for h in trainer.state.log_history if "grad_norm" in h]
    return {"logs": logs}


def _pl(out: Path, single: bool, fsdp: bool) -> dict:
    import lightning.pytorch as L
    from torch import nn

    from resgrad.integrations.lightning import GradientMonitorCallback

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))

        def configure_model(self) -> None:
            if fsdp and not single:
                from torch.distributed.fsdp import fully_shard

                for i in (0, 2, 4):
                    fully_shard(self.net[i], mesh=self.device_mesh)
                fully_shard(self, mesh=self.device_mesh)

        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self.net(x), y)  # a mean over this rank's part

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    class Memory(L.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.logged: dict[int, dict[str, float]] = {}

        name = "memory"
        version = 0

        def log_hyperparams(self, *a, **k):
            pass

        def log_metrics(self, metrics, step=None):
            self.logged.setdefault(int(step), {}).update(metrics)

    g = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(torch.randn(N, 6, generator=g) * 3, torch.randint(0, 3, (N,), generator=g))
    world = 1 if single else int(os.environ["WORLD_SIZE"])
    if single:
        strategy: object = "auto"
    elif fsdp:
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1)
    else:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    mem = Memory()
    net = Net()
    cb = GradientMonitorCallback(clip="both")
    acc = 1 if fsdp else ACC
    trainer = L.Trainer(max_steps=STEPS, gradient_clip_val=CLIP, callbacks=[cb], accumulate_grad_batches=acc,
                        logger=mem, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        devices=world, num_nodes=1, strategy=strategy, use_distributed_sampler=False)
    # Each rank its own half, in order (no sampler shuffling): the global batch is the dataset.
    rank = 0 if single else int(os.environ["RANK"])
    part = torch.utils.data.Subset(data, range(rank * N // world, (rank + 1) * N // world))
    trainer.fit(net, torch.utils.data.DataLoader(part, batch_size=N // world // acc, shuffle=False))
    sharded = 0
    if fsdp and not single:
        from torch.distributed.tensor import DTensor

        sharded = sum(isinstance(p, DTensor) for p in net.parameters())
    return {"logged": {str(k): v for k, v in mem.logged.items()}, "sharded": sharded}


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    single = "--single" in sys.argv
    torch.set_num_threads(1)
    if mode == "hf_ddp":
        got = _hf(out, single)
    else:
        got = _pl(out, single, fsdp=mode == "pl_fsdp")
    rank = 0 if single else int(os.environ["RANK"])
    if rank == 0:
        (out / f"{mode}{'_single' if single else ''}.json").write_text(json.dumps(got))
    gc.collect()  # free DTensors/meshes before the group goes (cf. _dist_worker.py)
    if not single and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
