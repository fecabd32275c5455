"""The WSGI entry point, ``gunicorn -c gunicorn.conf.py wsgi:app``; ``python wsgi.py`` for development."""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

from app import create_app

app = create_app()

if __name__ == "__main__":
    import logging

    from gevent.pywsgi import WSGIServer

    from app import logs
    from app.resources import raise_open_file_limit
    from app.runtime import start_chat
    from app.server.server import parse_bind, wait_for_shutdown

    raise_open_file_limit()  # as under gunicorn (gunicorn.conf.py): a descriptor per browser
    settings = app.config["CHAT_SETTINGS"]
    # Every line in CHAT_LOG_FORMAT, as under gunicorn: the chat's, any library's, and the access lines.
    console = logging.StreamHandler()
    console.setFormatter(logs.formatter(settings.log_format))
    logging.basicConfig(level=logging.INFO, handlers=[console])
    log = logging.getLogger("wsgi")
    host, port = parse_bind(settings.http_bind)
    http = WSGIServer((host, port), app, log=logging.getLogger("wsgi.access"))
    http.start()
    chat = start_chat(app, [f"http://{host}:{http.server_port}"])
    log.info("chat: web app on http://%s:%s/, WebSocket server on %s", host, http.server_port, chat.url)
    wait_for_shutdown()
    http.stop(timeout=5)
    chat.stop(timeout=5)  # drains the clients over CHAT_DRAIN_SECONDS first
