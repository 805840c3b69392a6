"""The baseline zoo: plain CNNs, GMR-Conv networks, C_N/D_N group convolutions, SO(2)/O(2) steerable CNNs.

Nothing here is imported by `bench` until a model is created: `bench.models` declares every name with the module
that implements it, and that module registers its factories with `@register_model` when imported. Modules that
need escnn / e2cnn / the official GMR package import them inside the factories (or at module level only in the
modules that are declared as needing them), so `import baselines` never pulls them in.

Layout:
- `baselines.common`: the shared small backbone (`SmallNet`), anti-aliased pooling, fair-width search.
- `baselines.cnn`: `cnn`, `resnet18`.
- `baselines.gmr_family`: `gmr`, `gmr_radius`, `gmr_resnet18` (our `gmr` package).
- `baselines.gmr_official`: `gmr_official` (the official GMR-Conv package in the same backbone).
- `baselines.escnn_models`: `c4` `c8` `c16` `d4` `d8` `so2` `o2` `so2_fourier` `c8_resnet18`.
- `baselines.e2cnn_models`: `e2cnn_c8` `e2cnn_d8` `e2cnn_so2`.
- `baselines.layers`: the single-layer models `layer_*`.
- `baselines.steerable`: helpers shared by the escnn and e2cnn code (fast He init, field-type utilities).

See docs/models.md for the table of parameter counts and build times.
"""
