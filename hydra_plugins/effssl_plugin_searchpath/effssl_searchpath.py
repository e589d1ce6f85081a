"""Hydra plugin: makes ``pkg://effssl_plugin.configs`` resolvable from any Hydra app
(solo-learn's ``main_linear.py`` included).

Hydra imports this module whenever any Hydra app starts, so it stays light: it imports only
``effssl_plugin``'s package (neither torch nor solo-learn), registers the configs' OmegaConf
resolver, and leaves the solo-learn registration to the first ``import solo`` of the app.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class EffSSLSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from effssl_plugin import register_resolvers, register_when_solo_is_imported

        search_path.append(provider="effssl-plugin", path="pkg://effssl_plugin.configs")
        register_resolvers()  # ${effssl.cpu_workers:...} of machine=cpu
        register_when_solo_is_imported()  # EffSSL and the timm backbone, for solo-learn's scripts
