"""The WSGI entry point, ``gunicorn -c gunicorn.conf.py wsgi:app``; ``python wsgi.py`` for development."""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

from app import create_app

app = create_app()

if __name__ == "__main__":
    import logging
    import os

    from gevent.pywsgi import WSGIServer

    from app.runtime import start_chat
    from app.server.server import parse_bind, wait_for_shutdown

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = parse_bind(os.environ.get("CHAT_HTTP_BIND", "127.0.0.1:8000"))
    http = WSGIServer((host, port), app)
    http.start()
    chat = start_chat(app, [f"http://{host}:{http.server_port}"])
    print(f"chat: web app on http://{host}:{http.server_port}/, WebSocket server on {chat.url}", flush=True)
    wait_for_shutdown()
    http.stop(timeout=5)
    chat.stop(timeout=5)
