/* config — being written */
typedef int parley_config_placeholder;
