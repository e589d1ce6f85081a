"""Pretrain with EffSSL (or any solo-learn method): python main_pretrain.py --config-name effssl"""

from effssl_plugin.main_pretrain import main

if __name__ == "__main__":
    main()
