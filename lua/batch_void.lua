-- batch_void.lua: write off a batch whose reply was lost, unless it ran.
--
-- KEYS[1]  the batch record (fs:{sale:ID}:batch:B or fs:{env:ID}:batch:B)
-- ARGV[1]  TTL of the record in seconds
--
-- Returns the record: "void" when this call (or an earlier one) wrote the
-- batch off, so a late script does nothing; else what the batch stored when
-- it ran ("ran:<results>"), which the caller then undoes.
if redis.call('SET', KEYS[1], 'void', 'NX', 'EX', ARGV[1]) then
  return 'void'
end
return redis.call('GET', KEYS[1])
