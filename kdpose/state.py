"""Train states: a pure pytree, built abstractly first, then materialised with its sharding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdpose import sharding
from kdpose.models import pretrained


@flax.struct.dataclass
class TrainState:
  """Everything that changes during a stage and is checkpointed.

  Attributes:
    step: scalar int32, number of optimizer updates done.
    params: the model parameters.
    batch_stats: BatchNorm running statistics.
    opt_state: the optimizer state.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  def variables(self) -> dict[str, Any]:
    """The variables ``model.apply`` takes."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def init_train_state(rng: jax.Array, model: flax.linen.Module, tx: optax.GradientTransformation,
                     example_inputs: tuple) -> TrainState:
  """Initialises a model on ``example_inputs`` (only their shapes matter) and its optimizer."""
  variables = model.init({"params": rng, "dropout": rng}, *example_inputs, train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def with_pretrained_encoder(state: TrainState, model_config: Any) -> TrainState:
  """``state`` with the image encoder's params and batch_stats replaced by the weights that
  ``model_config.pretrained`` names (unchanged when it is empty), on the same shardings.

  The optimizer state needs no change: Adam's moments start at zero whatever the parameters.
  """
  source = model_config.get("pretrained", "")
  if not source:
    return state
  current = {"params": state.params["image_encoder"],
             "batch_stats": state.batch_stats.get("image_encoder", {})}
  loaded = pretrained.load_encoder(model_config.image_encoder, source, current)
  placed = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), loaded, current)
  return state.replace(params=dict(state.params, image_encoder=placed["params"]),
                       batch_stats=dict(state.batch_stats, image_encoder=placed["batch_stats"]))


def abstract_state(init_fn: Callable[[jax.Array], TrainState], mesh: Mesh) -> tuple[Any, Any]:
  """Shapes first: the state's abstract tree with its (replicated) shardings, which is also the
  orbax restore target, and the sharding tree. Nothing is materialised."""
  shapes = jax.eval_shape(init_fn, jax.random.key(0))
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, state_sharding)
  return abstract, state_sharding


def create_sharded_state(init_fn: Callable[[jax.Array], TrainState], rng: jax.Array,
                         mesh: Mesh) -> tuple[TrainState, Any, Any]:
  """Shapes, then shardings, then materialise with ``jit(out_shardings)``.

  Returns the state, its abstract tree (the orbax restore target) and its sharding tree.
  """
  abstract, state_sharding = abstract_state(init_fn, mesh)
  state = jax.jit(init_fn, out_shardings=state_sharding)(rng)
  return state, abstract, state_sharding
