# Error rendering against Glance's transcript, byte for byte, and the error->status table.
import json

import pytest

from tessera.engine import errors as E
from tessera.http.errors import HTTPError, error_response, negotiate, render_error, status_for

ID = "00000000-0000-0000-0000-000000000000"
MSG = f"No image found with ID {ID}"


def test_404_plain_text_is_glance_bytes():
    for accept in (None, "", "text/plain"):
        resp = render_error(404, MSG, accept)
        assert resp.status == 404
        assert resp.headers == [("Content-Type", "text/plain; charset=UTF-8")]
        assert resp.body == f"404 Not Found\n\n{MSG}\n\n   ".encode()
        assert len(resp.body) == 79                      # transcript Content-Length


def test_404_json_is_glance_bytes():
    resp = render_error(404, MSG, "application/json")
    assert resp.headers == [("Content-Type", "application/json")]
    assert resp.body == (b'{"message": "No image found with ID ' + ID.encode()
                         + b'<br /><br />\\n\\n\\n", "code": "404 Not Found", '
                         b'"title": "Not Found"}')
    assert len(resp.body) == 139


@pytest.mark.parametrize("accept", ["*/*", "text/html", "text/html,application/json;q=0.9"])
def test_404_html_is_glance_bytes(accept):
    resp = render_error(404, MSG, accept)
    assert resp.headers == [("Content-Type", "text/html; charset=UTF-8")]
    assert resp.body == (
        "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
        f"  <h1>404 Not Found</h1>\n  {MSG}<br /><br />\n\n\n\n </body>\n</html>").encode()
    assert len(resp.body) == 181


def test_default_explanation_404():
    resp = render_error(404, "", "application/json")
    assert json.loads(resp.body)["message"] == "The resource could not be found.<br /><br />\n\n\n"
    assert len(resp.body) == 112                         # transcript: GET /v2/


def test_405_json_and_allow_header():
    resp = render_error(405, "", "application/json", [("Allow", "GET, POST")], method="DELETE")
    assert ("Allow", "GET, POST") in resp.headers
    assert json.loads(resp.body) == {
        "message": "The method DELETE is not allowed for this resource. <br /><br />\n",
        "code": "405 Method Not Allowed", "title": "Method Not Allowed"}
    assert len(resp.body) == 146
    plain = render_error(405, "", None, method="DELETE").body
    assert plain == b"405 Method Not Allowed\n\nThe method DELETE is not allowed for this resource. \n\n "


@pytest.mark.parametrize("ctype,detail,length", [
    ("application/json", "Image PATCH expects Content-Type one of: "
     "application/openstack-images-v2.0-json-patch, "
     "application/openstack-images-v2.1-json-patch", 307),
    ("application/json", "Invalid content type application/json", 213),
    ("application/octet-stream", "Image disk_format qcow2 does not match stream data raw", 238),
])
def test_415_json_matches_transcript(ctype, detail, length):
    resp = render_error(415, detail, "application/json", content_type=ctype)
    body = json.loads(resp.body)
    assert body["message"] == (f"The request media type {ctype} is not supported by this "
                               f"server.\n<br /><br />\n{detail}")
    assert body["code"] == "415 Unsupported Media Type"
    assert len(resp.body) == length


def test_html_escapes_message():
    body = render_error(400, "<script>&", "text/html").body
    assert b"&lt;script&gt;&amp;<br /><br />" in body


def test_negotiation_follows_webob():
    assert negotiate(None) == "text/plain"
    assert negotiate("text/plain") == "text/plain"
    assert negotiate("*/*") == "text/html"
    assert negotiate("application/json") == "application/json"
    assert negotiate("application/json, text/html;q=0.5") == "application/json"
    assert negotiate("text/*") == "text/html"
    assert negotiate("application/json;q=0") == "text/plain"


@pytest.mark.parametrize("exc,status", [
    (E.NotFound("x"), 404), (E.InvalidInput("x"), 400), (E.BadTransition("x"), 400),
    (E.Forbidden("x"), 403), (E.Conflict("x"), 409),
    (E.InvalidTransition("active", "saving"), 409), (E.TooLarge("x"), 413),
    (E.StorageFull("x"), 413), (E.Gone("x"), 410), (E.UnsupportedFormat("x"), 415),
    (E.Unavailable("x"), 503), (E.CorruptData("x"), 500), (E.StoreMismatch("x"), 500),
])
def test_status_table(exc, status):
    assert status_for(exc) == status
    assert error_response(exc, None).status == status


def test_internal_errors_do_not_leak_their_message():
    resp = error_response(E.CorruptData("chunk abc failed its hash"), "application/json")
    assert b"chunk abc" not in resp.body
    assert json.loads(resp.body)["code"] == "500 Internal Server Error"


def test_http_error_keeps_headers_and_message():
    exc = HTTPError(415, "Invalid content type text/x", [("Accept-Patch", "a, b")])
    resp = error_response(exc, "application/json", content_type="text/x")
    assert resp.status == 415 and ("Accept-Patch", "a, b") in resp.headers
    assert json.loads(resp.body)["message"].endswith("<br /><br />\nInvalid content type text/x")


def test_engine_message_is_the_explanation():
    resp = error_response(E.Conflict("Image status transition from active to saving is not "
                                     "allowed"), "application/json")
    assert json.loads(resp.body)["message"] == ("Image status transition from active to saving "
                                                "is not allowed<br /><br />\n\n\n")


def test_416_with_detail_plain_matches_transcript():
    detail = ("Invalid start position in Range header. Start position MUST be in the inclusive "
              "range [0, 196615].")
    resp = error_response(HTTPError(416, detail=detail), None)
    assert resp.body == ("416 Request Range Not Satisfiable\n\nThe Range requested is not "
                         f"available.\n\n {detail}  ").encode()
    assert len(resp.body) == 175
