"""The web demo in a real browser: ``python app.py`` on the tiny checkpoint, driven by headless chromium.

The app runs as a subprocess exactly as a user starts it; Playwright drives Debian's chromium (no browser
download): refused uploads show an error, an upload + text + Generate gives a video that plays, with sound,
and the server stops cleanly on SIGTERM (the session fixture ``webapp_server`` in conftest.py checks that).
"""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium keeps calling Google's services on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
GENERATION_SECONDS = 120

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # about a minute on an idle 2-core machine: the app's start (torch, diffusers, gradio) dominates
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                       "(apt-get install chromium; .ci/run installs it)"),
    pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                       reason="Gradio's streaming video needs ffmpeg and ffprobe on PATH "
                              "(apt-get install ffmpeg; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def upload_files(tmp_path_factory) -> dict:
    from avatar_gen.synthetic import make_portrait

    folder = tmp_path_factory.mktemp("webapp_uploads")
    fake = folder / "holiday.png"
    fake.write_text("a text file with an image's name\n")
    dot = folder / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(dot)
    from avatar_gen.audio.tts import synthesize
    from avatar_gen.media import write_wav

    speech = synthesize("This sentence was recorded before.", voice="en-gb")
    recording = write_wav(folder / "recording.wav", speech.audio, speech.sample_rate)
    return {"portrait": make_portrait(folder / "face.png", seed=5, size=128), "fake": fake, "dot": dot,
            "speech": recording, "speech_seconds": len(speech.audio) / speech.sample_rate}


STREAMED_TEXT = ("Hello from the browser test. This line is long enough to be made in many chunks, and the first "
                 "of them plays while the others are still being made.")
# Resolves when the video first advances: its position, and the description area at that moment (no description
# while the generation is still running, at most Gradio's progress text).
FIRST_PLAY_JS = """video => new Promise(resolve => {
    const report = () => resolve({time: video.currentTime, error: video.error && video.error.code,
                                  summary: document.querySelector('#summary').innerText.trim()});
    if (video.currentTime > 0) { report(); return; }
    video.addEventListener('timeupdate', () => { if (video.currentTime > 0) report(); });
    video.addEventListener('error', report, {once: true});
})"""


def test_browser_upload_generate_play_and_refuse_bad_uploads(webapp_server, upload_files, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    from avatar_gen.media import probe_video
    from avatar_gen.webapp import EXAMPLE_TEXTS

    url = webapp_server.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            webapp_server.wait_until_serving()
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(url)
            page.wait_for_selector("#generate", timeout=60_000)

            # Refused uploads: a text file named .png, then a 1x1 image; each shows its reason on the page and is
            # then removed from it (the upload event's .failure).  The next upload waits for that removal: landing
            # on a new upload, it would clear that one before its check ran, and no reason would show.
            for refused, reason in ((upload_files["fake"], "the portrait is not an image file"),
                                    (upload_files["dot"], "the portrait is 1x1 pixels")):
                page.locator("#portrait input[type=file]").set_input_files(str(refused))
                expect(page.get_by_text(reason)).to_be_visible(timeout=30_000)
                expect(page.locator("#portrait img")).to_have_count(0, timeout=30_000)
            # Generating without a usable portrait is refused too, and the server keeps answering.
            page.locator("#portrait input[type=file]").wait_for(state="attached", timeout=10_000)
            page.fill("#text textarea", "Hello from the browser test.")
            page.click("#generate")
            expect(page.get_by_text("upload a portrait first")).to_be_visible(timeout=30_000)

            page.locator("#portrait input[type=file]").set_input_files(str(upload_files["portrait"]))
            page.wait_for_selector("#portrait img[src*='face']", timeout=30_000)
            page.fill("#text textarea", STREAMED_TEXT)
            page.click("#generate")
            # Streaming: the first segment plays while later chunks are still being generated (the description
            # line appears only when the whole video is done).
            video = page.wait_for_selector("#result-video video", timeout=GENERATION_SECONDS * 1000)
            first_play = video.evaluate(FIRST_PLAY_JS)
            assert first_play["error"] is None, f"chromium cannot play the stream (MediaError {first_play['error']})"
            # the description ("... frames at 25 fps ...") is not there yet; Gradio's progress text may be
            assert "frames at" not in first_play["summary"], f"played only after generation ended: {first_play}"
            expect(page.locator("#summary")).to_contain_text("frames at 25 fps", timeout=GENERATION_SECONDS * 1000)
            expect(page.locator("#download")).to_contain_text(".mp4")
            assert video.evaluate("v => v.videoWidth") > 0

            # The download is the generator's MP4: H.264 with the speech as an audio track.
            served = Path(artifacts_dir) / "webapp_generated.mp4"
            download_url = page.locator("#download a[href]").first.get_attribute("href")
            with urllib.request.urlopen(urllib.parse.urljoin(url, download_url), timeout=30) as response:
                served.write_bytes(response.read())
            info = probe_video(served)
            assert info.has_audio and info.num_frames > 0 and (info.width, info.height) == (64, 64)
            assert info.duration > 3.0  # several chunks of 17 frames

            page.screenshot(path=str(Path(artifacts_dir) / "webapp.png"), full_page=True)

            # Uploaded speech instead of text: the video follows the recording's length.
            first_download = download_url
            page.get_by_label("Upload speech").check()
            page.locator("#speech-audio input[type=file]").set_input_files(str(upload_files["speech"]))
            page.wait_for_selector("#speech-audio audio, #speech-audio .waveform-container, #speech-audio button",
                                   timeout=30_000)
            page.click("#generate")
            page.wait_for_function(
                "previous => { const link = document.querySelector('#download a[href]');"
                " return link && link.getAttribute('href') !== previous; }", arg=first_download,
                timeout=GENERATION_SECONDS * 1000)
            download_url = page.locator("#download a[href]").first.get_attribute("href")
            with urllib.request.urlopen(urllib.parse.urljoin(url, download_url), timeout=30) as response:
                served.write_bytes(response.read())
            assert abs(probe_video(served).duration - upload_files["speech_seconds"]) < 0.1

            # An example fills the inputs with the demo's synthetic face and its line.
            page.get_by_text(EXAMPLE_TEXTS[0]).first.click()
            expect(page.locator("#text textarea")).to_have_value(EXAMPLE_TEXTS[0], timeout=10_000)
            expect(page.locator("#portrait img[src*='example_portrait_0']")).to_be_visible(timeout=10_000)
        finally:
            browser.close()
    # The page loads nothing from the internet (fonts, scripts, telemetry): everything comes from the app.
    assert requested and all(address.startswith((url, "data:", "blob:")) for address in requested), \
        sorted({address for address in requested if not address.startswith((url, "data:", "blob:"))})

    # The server stays up; the session fixture checks at the end that it stops cleanly on SIGTERM (exit 0, no process
    # left, no traceback logged).
    assert webapp_server.process.poll() is None, "the server died during the session"
