"""The three controllers (Ray, RayJob, RayPipeline) and the operator process that runs them."""
