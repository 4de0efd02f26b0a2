"""Brand-logo detection: preprocessing, backbone, brand heads, bundles, training, evaluation.

Imports nothing else of ours. TensorFlow is only imported by the modules that need it
(`model`, `export`, training), so `preprocess`, `bundle` scoring and `synth` stay light.
"""
