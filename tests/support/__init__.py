"""What the tests share, one module per concern; fixtures stay in the ``conftest.py`` files and use these.

- :mod:`~tests.support.timeouts`: ``scaled(seconds)`` and ``TIMEOUT_SCALE`` (``CHAT_TEST_TIMEOUT_SCALE``).
- :mod:`~tests.support.processes`: ``REPO_ROOT``, ``free_port``; ending what a test started
  (``end_process``, ``stop_process``, ``end_tree``, ``kill_worker``); ``/proc`` lookups (``process_gone``,
  ``wait_gone``, ``descendants``, ``gunicorn_master`` …); a process's output (``first_line``,
  ``wait_for_output``, ``assert_clean``).
- :mod:`~tests.support.gunicorn`: the chat under gunicorn as the README runs it: ``launch_chat`` and its
  ``ChatServer``, ``server_environment``, ``spawn_gunicorn``, ``two_workers``, ``worker_rss``.
- :mod:`~tests.support.inprocess`: the chat (web app and WebSocket server) in the test's own process, on a
  thread with its own gevent hub: ``InProcessChat``.
- :mod:`~tests.support.echo`: the echo server as a process: ``run_echo_server``, ``EchoServer``.
- :mod:`~tests.support.http`: ``urllib`` without proxies: ``http_request``, ``get_json``, ``post_session``,
  ``session``.
- :mod:`~tests.support.clients`: ``websockets`` clients: ``open_ws``, ``connect``, ``join``, ``say``,
  ``rooms``, ``recv_json``, ``recv_until``, ``read_until_closed`` …
- :mod:`~tests.support.raw`: a client on a bare socket: ``RawClient``, ``handshake_request``, ``raw_status``,
  ``client_frame``, ``close_code``, ``open_raw_member``.
- :mod:`~tests.support.names`: ``fresh_nick``, ``fresh_room``.
- :mod:`~tests.support.redis`: ``SHARED_REDIS`` and ``shared_prefix``; ``RedisServer``, a private one.
- :mod:`~tests.support.user`: ``use_the_chat``, one user's session through a running chat.
- :mod:`~tests.support.browser`: Chromium's path and flags, the browser tests' admin password and token.
- :mod:`~tests.support.pages`: the chat's pages in Playwright: ``enter``, ``say``, ``message``, ``WAIT_MS`` ….
- :mod:`~tests.support.wire`: RFC 6455's sample mask, a client's permessage-deflate (``client_deflate``).
- :mod:`~tests.support.memory`: ``peak_memory``.
"""
