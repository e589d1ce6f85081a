"""EffSSL Hydra configs, installed as ``effssl_plugin.configs``."""
