"""The app served for real (prevent_thread_lock) and called through gradio_client at every public
api name, on tiny models (see test_app.py's fixtures)."""
import zipfile

import pytest
from PIL import Image

import app
from gan_core.inference.loading import load_model

from test_app import N_SLIDERS_ZERO, model_dir, models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # the app served over HTTP

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture
def client(models, tmp_path):
    demo = app.build()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, show_error=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
    finally:
        demo.close()


def test_every_public_endpoint(client, tmp_path):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/train", "/stop", "/sample", "/interpolate", "/blobs", "/edit_blob", "/invert", "/classify",
                 "/classify_batch"):
        assert name in api, name
    params = [p["parameter_name"] for p in api["/sample"]["parameters"]]
    assert params[:4] == ["model", "seed", "count", "truncation"] and "direction_8" in params and params[-1] == "refine"
    assert not any(name.startswith("param_") for name in params)  # every input has a name an agent can read

    grid, gallery = client.predict("tiny-dcgan", 1, 4, 1.0, "random", False, True, *N_SLIDERS_ZERO, api_name="/sample")
    with Image.open(grid) as im:
        assert im.size == (4 * (4 * 34 + 2), 4 * (34 + 2))  # 32 px tiles shown 4x
    assert len(gallery) == 4

    strip, gif = client.predict("tiny-dcgan", 1, 2, 3, 1.0, "random", api_name="/interpolate")
    with Image.open(strip) as im:
        assert im.size == (3 * 34 + 2, 34 + 2)
    with Image.open(gif) as im:
        assert im.format == "GIF"

    image, bmap, ellipses, layout, blob = client.predict("tiny-blobgan", 0, api_name="/blobs")
    assert set(layout) >= {"xy", "ab", "angle", "size", "phi", "psi", "bg_phi", "bg_psi"} and blob["value"] in range(3)  # the most visible blob
    *_, moved, blob = client.predict("tiny-blobgan", layout, 1, "move", 0.2, 0.0, 0, 0, 1, api_name="/edit_blob")
    assert moved["xy"][0][1][0] == pytest.approx(min(1.0, layout["xy"][0][1][0] + 0.2), abs=1e-3) and blob["value"] == 1

    photo = tmp_path / "photo.png"
    Image.new("RGB", (70, 50), (250, 200, 0)).save(photo)
    *_, inverted, _ = client.predict("tiny-blobgan", gradio_client.handle_file(str(photo)), api_name="/invert")
    assert len(inverted["xy"][0]) == 3

    label, top = client.predict("tiny-cluster", gradio_client.handle_file(str(photo)), api_name="/classify")
    assert {c["label"] for c in label["confidences"]} == {"cluster 0", "cluster 1", "cluster 2"}
    assert label["label"] in {"cluster 0", "cluster 1", "cluster 2"} and top.startswith("Looks like")

    table, counts, csv_file = client.predict("tiny-cluster", [gradio_client.handle_file(str(photo))] * 2,
                                             api_name="/classify_batch")
    assert len(table["data"]) == 2 and sum(row[1] for row in counts["data"]) == 2
    assert open(csv_file).read().startswith("file,cluster,confidence")

    summary, losses, sample, checkpoint_zip = client.predict(
        "shapes", None, "", "dcgan", 4, 4, 2e-4, 32, 3, 10, "from-api", api_name="/train")
    assert "done" in summary
    with zipfile.ZipFile(checkpoint_zip) as z:
        z.extractall(tmp_path / "unzipped")
    assert load_model(tmp_path / "unzipped" / "from-api").cfg.model.kind == "dcgan"
    assert client.predict(api_name="/stop") == "No training job is running."
    # A model trained after the page was built is callable at once.
    grid, _ = client.predict("from-api", 1, 2, 1.0, "random", False, False, *N_SLIDERS_ZERO, api_name="/sample")
    with Image.open(grid) as im:
        assert im.size == (4 * (2 * 34 + 2), 4 * (34 + 2))


def test_errors_reach_the_client_as_one_line(client):
    with pytest.raises(Exception, match="Unknown model .nope."):
        client.predict("nope", 1, 4, 1.0, "random", False, False, *N_SLIDERS_ZERO, api_name="/sample")


def test_the_api_is_an_mcp_server(models):
    """Where Gradio's mcp extra is installed (requirements.txt asks for it), the public endpoints are MCP
    tools with described, named parameters; an MCP client lists them and calls one."""
    pytest.importorskip("mcp")
    import asyncio

    from mcp import ClientSession
    from mcp.client.sse import sse_client

    assert app.MCP  # the app turns it on by itself
    demo = app.build()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, mcp_server=app.MCP)

    async def session():
        async with sse_client(demo.local_url + "gradio_api/mcp/sse") as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = {t.name: t for t in (await s.list_tools()).tools}
                drawn = await s.call_tool("sample_images", {"model": "tiny-dcgan", "seed": 1, "count": 2})
                blobs = await s.call_tool("sample_blobs", {"model": "tiny-blobgan", "seed": 0})
                return tools, drawn, blobs

    try:
        tools, drawn, blobs = asyncio.run(session())
    finally:
        demo.close()
    for name in ("sample_images", "classify", "sample_blobs", "edit_blob", "invert_image", "classify_batch"):
        assert name in tools, name
        props = tools[name].inputSchema["properties"]
        assert props and not any(p.startswith("param_") for p in props), (name, list(props))
        assert all(p.get("description") for p in props.values()), name  # from the docstrings' Args
    assert list(tools["sample_images"].inputSchema["properties"])[:3] == ["model", "seed", "count"]
    # Gradio 6.31 returns a tool with several outputs as one text item, the images as file URLs an agent fetches
    for result in (drawn, blobs):
        assert not result.isError and "gradio_api/file=" in result.content[0].text, result
