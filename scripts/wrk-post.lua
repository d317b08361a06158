-- wrk script: POST a 64-byte body (a background job's payload) to the URL
-- given on the command line, e.g. http://127.0.0.1:PORT/v1/functions/f/jobs.
wrk.method = "POST"
wrk.body = string.rep("x", 64)
wrk.headers["Content-Type"] = "application/octet-stream"
