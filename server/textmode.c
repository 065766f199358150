/* textmode — being written */
typedef int parley_textmode_placeholder;
