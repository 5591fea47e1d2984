# The client of bench/scripts/callgrind-hop.sh: N GET requests in absolute form (with hop's six
# context headers) through the proxy on PORT, on one keep-alive connection.
#   callgrind-load.py PORT UPSTREAM N [USERS]   (x-user-id cycles through USERS values; default 1)
import http.client, sys, time
proxy_port, upstream, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
users = int(sys.argv[4]) if len(sys.argv) > 4 else 1
H = {"x-user-id": "user-7f3a9c21", "x-country": "NL", "x-plan": "pro", "x-age": "34", "x-app-version": "2.3.1", "x-email": "ada@example.com"}
c = http.client.HTTPConnection("127.0.0.1", proxy_port)
for i in range(n):
    if users > 1:
        H["x-user-id"] = f"user-{i % users:08x}"
    c.request("GET", f"http://{upstream}/api/orders/42", headers=H)
    r = c.getresponse(); r.read()
    if r.status != 200: print("status", r.status); sys.exit(1)
print("ok", n)
