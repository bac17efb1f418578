"""A local stand-in for WeChat's servers: the official-account and mini-program APIs the
backend calls, plus ``/_sim/`` endpoints through which tests and demos play the users.

It enforces WeChat's platform rules with WeChat's real error codes so that code which works
against it has already met the rules it will meet in production.

Import ``create_app`` from ``api.wechat_emulator.app`` and the world from
``api.wechat_emulator.state``; this package file imports nothing so that the plain-Python
state stays importable without FastAPI.
"""
