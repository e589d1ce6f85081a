"""Hydra plugin: makes ``pkg://effssl_plugin.configs`` resolvable from any Hydra app
(solo-learn's ``main_linear.py`` included) and registers EffSSL with solo-learn."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class EffSSLSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="effssl-plugin", path="pkg://effssl_plugin.configs")
        try:
            from effssl_plugin import register

            register()
        except ImportError:  # solo-learn absent: configs still resolve
            pass
