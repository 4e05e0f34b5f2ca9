"""One module per architecture, named as `architecture` says in params.yaml (`fcn.py` is `architecture: fcn`).
Each defines its pure `nn.Module`s, its options dataclass and its builder, registered together with
`@register_model` (see `pipeline.models.registry`); code two architectures share lives in `pipeline.models.layers`.
Only the registry imports these modules, one at a time and on demand."""
