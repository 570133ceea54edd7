local s = "a\q
b`c"
