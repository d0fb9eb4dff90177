-- tokens.lua: shared by the flashsale wrk scripts (loaded with dofile).
-- build_requests reads a token-pool file (`flashsale token --pool N --out
-- FILE`: one bearer token a line) and returns one pre-formatted request per
-- token, so request() costs wrk nothing but a pick.

function build_requests(path, method, url, body)
   local f = io.open(path, "r")
   if not f then
      error("token pool " .. path .. " not found: flashsale token --pool N --out " .. path)
   end
   local reqs = {}
   local headers = {}
   if body then
      headers["Content-Type"] = "application/json"
   end
   for line in f:lines() do
      if line ~= "" then
         headers["Authorization"] = "Bearer " .. line
         reqs[#reqs + 1] = wrk.format(method, url, headers, body)
      end
   end
   f:close()
   if #reqs == 0 then
      error("token pool " .. path .. " is empty")
   end
   return reqs
end
