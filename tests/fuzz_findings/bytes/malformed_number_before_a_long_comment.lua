local x = 1..--[[ a `quoted` word ]] 2
