"Shared pytest set-up: markers, and the offline hub setting every test needs."
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def pytest_configure(config):
    config.addinivalue_line('markers', 'browser: drives Debian Chromium through Playwright (skips without it, fails under CI=true)')
    config.addinivalue_line('markers', 'flaky: rerun on failure (pytest-rerunfailures); used for end-to-end browser tests')
