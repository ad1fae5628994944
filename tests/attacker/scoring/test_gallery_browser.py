"""The gallery as a reader sees it: rendered by headless Chromium, every image loads and the headline is there."""

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.interceptor import Interceptor
from fednas.run_folder import RunFolder
from tests.conftest import require_program

# loads the gallery in a same-origin frame and writes what it finds into the page, for --dump-dom to print
HARNESS = """<!doctype html><html><body><iframe id="g" src="index.html" width="1400" height="900"></iframe>
<pre id="result">pending</pre><script>
document.getElementById('g').addEventListener('load', function () {
  var doc = this.contentDocument, imgs = Array.from(doc.images), h = doc.getElementById('headline');
  document.getElementById('result').textContent = JSON.stringify({
    images: imgs.map(function (i) { return [i.getAttribute('src'), i.complete && i.naturalWidth > 0]; }),
    headline: h ? h.textContent : null});
});
</script></body></html>"""


def browser() -> str:
    for name in ("chromium-headless-shell", "chromium"):
        if shutil.which(name):
            return name
    return require_program("chromium-headless-shell", "apt-get install chromium-headless-shell; .ci/run installs it")


def test_the_gallery_renders_with_every_image_and_a_headline(tiny_run, tmp_path):
    program = browser()
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("reconstructions"))
    settings = RunFolder(run).section(InterceptorConfig).model_copy(update={
        "attacks": "adra,theta", "attack_iterations": 2, "inversion_iterations": 2, "attack_prior": "pixel",
        "attack_aux_samples": 100})
    interceptor = Interceptor(run, settings, log=lambda line: None)
    interceptor.process(interceptor.pending())
    interceptor.report()
    folder = interceptor.out
    (folder / "harness.html").write_text(HARNESS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run([program, "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom",
                              f"http://127.0.0.1:{server.server_address[1]}/harness.html"],
                             capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.shutdown()
    found = re.search(r'<pre id="result">(.*?)</pre>', out.stdout, re.DOTALL)
    assert found and found.group(1) != "pending", out.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    images = dict(result["images"])
    assert not [src for src, ok in images.items() if not ok], f"images that did not load: {images}"
    grids = [src for src in images if src.startswith("r0001-")]
    assert len(grids) == 4 and sum(src.startswith("labels-") for src in images) >= 2
    assert re.match(r"ADRA \(Δα\) identified \d+ of \d+ images beyond their label", result["headline"])
