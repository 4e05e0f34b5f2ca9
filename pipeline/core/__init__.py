"""What every stage shares: params, paths, the runtime policy, the one error type, atomic writes, stage plumbing and
label maps. Imports no other part of the pipeline."""
